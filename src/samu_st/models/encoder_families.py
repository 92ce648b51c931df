"""The speech encoder families: which transformers class, which presets, which input features.

``encoder.family`` picks one of:

===========  ==========================  ==================================  =====================
family       transformers class          input                               paper-size preset
===========  ==========================  ==================================  =====================
wav2vec2     ``Wav2Vec2Model``           waveform (normalised per clip)      XLS-R 300M
hubert       ``HubertModel``             waveform (normalised per clip)      HuBERT large (300M)
wavlm        ``WavLMModel``              waveform (normalised per clip)      WavLM large (300M)
w2v-bert     ``Wav2Vec2BertModel``       80 log-mel fbank, 2 frames stacked  w2v-BERT 2.0 (600M)
whisper      ``WhisperEncoder``          80 log-mel (Whisper's), 30 s        large-v2 encoder (635M)
===========  ==========================  ==================================  =====================

Every family gives 50 encoder frames per second. The features are computed inside the model
(:mod:`samu_st.models.family_model`) from the same normalised waveform batches every step
already makes, with each family's own transformers feature extractor
(``SeamlessM4TFeatureExtractor``, ``WhisperFeatureExtractor``), one clip at a time so that a
clip's features never depend on the batch.

The Whisper paper-size preset is the large-v2 encoder: it is the system whose published CoVoST-2
numbers the report quotes (36.2 / 32.6 / 25.2) and it is the size class of w2v-BERT 2.0. (For a
same-size comparison with XLS-R 300M, Whisper medium's encoder has XLS-R's exact transformer
shape: 24 layers of 1024, 16 heads, FFN 4096.)

The presets are in :mod:`samu_st.models.encoder_presets`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from transformers import (
    HubertConfig,
    HubertModel,
    PretrainedConfig,
    PreTrainedModel,
    Wav2Vec2BertConfig,
    Wav2Vec2BertModel,
    Wav2Vec2Config,
    Wav2Vec2Model,
    WavLMConfig,
    WavLMModel,
    WhisperConfig,
)
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from samu_st.errors import ConfigError
from samu_st.models.encoder_presets import (
    HUBERT_PRESETS,
    W2V_BERT_PRESETS,
    WAV2VEC2_OVERRIDES,
    WAV2VEC2_PRESETS,
    WAVLM_PRESETS,
    WHISPER_OVERRIDES,
    WHISPER_PRESETS,
)

EncoderFamily = Literal["wav2vec2", "hubert", "wavlm", "w2v-bert", "whisper"]
FAMILY_NAMES: tuple[EncoderFamily, ...] = ("wav2vec2", "hubert", "wavlm", "w2v-bert", "whisper")
InputKind = Literal["waveform", "fbank", "log-mel"]


@dataclass(frozen=True)
class Family:
    """One encoder family (see the module docstring)."""

    name: EncoderFamily
    model_type: str  # `model_type` of its config.json
    config_class: type[PretrainedConfig]
    model_class: type[PreTrainedModel]
    inputs: InputKind
    presets: Mapping[str, Mapping[str, Any]]
    description: str
    overrides: Mapping[str, str | None] = field(default_factory=lambda: WAV2VEC2_OVERRIDES)

    @property
    def attn_implementation(self) -> str:
        """SDPA where transformers has it for the family (WavLM has not: eager)."""
        return "sdpa" if getattr(self.model_class, "_supports_sdpa", False) else "eager"

    def config(self, size: str, **extra: Any) -> PretrainedConfig:
        """The config of preset ``size`` (``extra`` values win), SDPA attention if supported."""
        if size not in self.presets:
            raise ValueError(f"unknown encoder size {size!r}; choose one of {sorted(self.presets)}")
        kwargs = {**self.presets[size], **extra, "attn_implementation": self.attn_implementation}
        return self.config_class(**kwargs)

    def apply_overrides(self, config: PretrainedConfig, values: Mapping[str, Any]) -> None:
        """Set the non-None dropout / masking ``values`` (EncoderConfig names) on ``config``."""
        for name, value in values.items():
            if value is None:
                continue
            target = self.overrides.get(name, name)
            if target is None:
                raise ConfigError(f"encoder.{name}: the {self.name} encoder has no such setting")
            setattr(config, target, value)


FAMILIES: dict[str, Family] = {
    "wav2vec2": Family(
        "wav2vec2",
        "wav2vec2",
        Wav2Vec2Config,
        Wav2Vec2Model,
        "waveform",
        WAV2VEC2_PRESETS,
        "wav2vec2 / XLS-R (conv front end + transformer)",
    ),
    "hubert": Family(
        "hubert",
        "hubert",
        HubertConfig,
        HubertModel,
        "waveform",
        HUBERT_PRESETS,
        "HuBERT (conv front end + transformer)",
    ),
    "wavlm": Family(
        "wavlm",
        "wavlm",
        WavLMConfig,
        WavLMModel,
        "waveform",
        WAVLM_PRESETS,
        "WavLM (conv front end + transformer with gated relative position bias)",
    ),
    "w2v-bert": Family(
        "w2v-bert",
        "wav2vec2-bert",
        Wav2Vec2BertConfig,
        Wav2Vec2BertModel,
        "fbank",
        W2V_BERT_PRESETS,
        "w2v-BERT 2.0 (fbank features + conformer)",
    ),
    "whisper": Family(
        "whisper",
        "whisper",
        WhisperConfig,
        cast(type[PreTrainedModel], WhisperEncoder),
        "log-mel",
        WHISPER_PRESETS,
        "Whisper encoder (log-mel + 2 convs + transformer)",
        WHISPER_OVERRIDES,
    ),
}


def get_family(name: str) -> Family:
    """The :class:`Family` called ``name`` (ConfigError for an unknown one)."""
    if name not in FAMILIES:
        raise ConfigError(f"unknown encoder family {name!r}; choose one of {list(FAMILY_NAMES)}")
    return FAMILIES[name]


def family_of_model_type(model_type: str | None) -> Family | None:
    """The family whose checkpoints have ``model_type`` (None if no family has it)."""
    for family in FAMILIES.values():
        if family.model_type == model_type:
            return family
    return None
