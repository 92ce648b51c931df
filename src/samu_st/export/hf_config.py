"""The transformers configuration of an exported ``-A`` encoder: ``Wav2Vec2Config`` under its
own ``model_type``, so that plain transformers (without ``import samu_st``) refuses the folder
instead of silently dropping the bottleneck adapters, and ``import samu_st`` restores them."""

from __future__ import annotations

from typing import Any

# Straight from the submodules: this runs while `transformers.models.auto` itself is being
# imported (samu_st.export.hooks), when `from transformers import AutoConfig` would recurse.
from transformers.models.auto.configuration_auto import AutoConfig
from transformers.models.wav2vec2.configuration_wav2vec2 import Wav2Vec2Config

#: ``model_type`` of the encoder in an exported ``-A`` ``config.json``. The name is what plain
#: transformers prints when it refuses the folder ("Unrecognized model identifier: ..."),
#: so it says what is needed.
ENCODER_MODEL_TYPE = "samu_st_wav2vec2_adapters__requires_import_samu_st"

_model_registered = False


class SamuWav2Vec2Config(Wav2Vec2Config):
    """``Wav2Vec2Config`` of an encoder with bottleneck adapters (``samu_bottleneck_adapters``)
    and a padding-exact length adaptor."""

    model_type = ENCODER_MODEL_TYPE

    def __post_init__(self, **kwargs: Any) -> None:
        super().__post_init__(**kwargs)
        # The model class imports transformers' modelling code (slow): registered only once a
        # configuration of this type exists, i.e. just before a model is built from it.
        register_model()


def register_config() -> None:
    AutoConfig.register(ENCODER_MODEL_TYPE, SamuWav2Vec2Config, exist_ok=True)


def register_model() -> None:
    global _model_registered
    if _model_registered:
        return
    from transformers import AutoModel

    from samu_st.export.hf_model import SamuWav2Vec2Model

    AutoModel.register(SamuWav2Vec2Config, SamuWav2Vec2Model, exist_ok=True)
    _model_registered = True
