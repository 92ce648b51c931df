"""The encoder model of an exported ``-A`` folder: ``Wav2Vec2Model`` with the bottleneck
adapters its config records and the padding-exact length adaptor, built by
``AutoModel.from_config`` inside ``SpeechEncoderDecoderModel`` (see :mod:`.hf_config`)."""

from __future__ import annotations

from typing import Any

from transformers import Wav2Vec2Model

from samu_st.export.hf_config import SamuWav2Vec2Config
from samu_st.models.adapters import CONFIG_KEY, add_bottleneck_adapters
from samu_st.models.length_adaptor import attach_length_adaptor


class SamuWav2Vec2Model(Wav2Vec2Model):
    """``Wav2Vec2Model`` + two bottleneck adapters per layer + :class:`LengthAdaptor`; the
    parameter names are those of :func:`samu_st.models.translator.load_translator`."""

    config_class = SamuWav2Vec2Config

    def __init__(self, config: SamuWav2Vec2Config) -> None:
        super().__init__(config)
        spec: dict[str, Any] | None = getattr(config, CONFIG_KEY, None)
        if spec:
            add_bottleneck_adapters(
                self, float(spec["ratio"]), str(spec["activation"]), bool(spec["layer_norm"])
            )
        attach_length_adaptor(self, int(config.num_adapter_layers) if config.add_adapter else 0)
