"""The speech encoder: a transformers model of one family (``Wav2Vec2Model`` / XLS-R by
default; HuBERT, WavLM, w2v-BERT 2.0, Whisper's encoder: :mod:`.encoder_families`) with
freezing modes.

- :class:`EncoderConfig` — which family, where the encoder comes from (a local folder or a size
  preset) and how it trains (``full`` / ``adapters`` / ``frozen``).
- :func:`build_encoder` / :func:`load_encoder` — the model of any family from a preset or a
  local folder; :func:`wav2vec2_config` / :func:`build_wav2vec2` — the same for wav2vec2 (the
  other families come wrapped in :class:`~.family_model.FamilySpeechModel`, which has the
  ``Wav2Vec2Model`` interface).
- :class:`SpeechEncoder` — ``(input_values (B, S), lengths (B,)) -> EncoderOutput(hidden (B, T,
  D), lengths (B,), mask (B, T))``; freezing by mode; adapters inserted for ``adapters`` mode.
- :func:`encoder_parameter_summary` — parameter counts (base encoder, adapters, trainable).

Padding: with ``feat_extract_norm="layer"`` (XLS-R, and every preset here) the output on valid
frames does not depend on padding, because every conv layer normalises each frame on its own and
the transformer masks padded frames. With ``feat_extract_norm="group"`` (wav2vec2-base/large
English checkpoints) the first conv layer's GroupNorm normalises over TIME, padding included, so
the outputs change with the amount of padding; :class:`SpeechEncoder` warns for such models
(batch utterances of similar length, or use batch size 1, to limit the effect).
"""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple, TypeVar, cast

import torch
from torch import nn
from transformers import PreTrainedModel, Wav2Vec2Config, Wav2Vec2Model

from samu_st.errors import ConfigError, ModelLoadError
from samu_st.models.adapters import (
    CONFIG_KEY,
    add_bottleneck_adapters,
    bottleneck_adapters,
    has_bottleneck_adapters,
    restore_bottleneck_adapters,
)
from samu_st.models.encoder_families import EncoderFamily, family_of_model_type, get_family
from samu_st.models.encoder_presets import WAV2VEC2_OVERRIDES, WAV2VEC2_PRESETS
from samu_st.models.family_model import FamilySpeechModel, WhisperInput
from samu_st.models.loading import (
    check_loading_info,
    hf_load_errors,
    quiet_transformers,
    require_pretrained_folder,
)
from samu_st.packaged import resolve_model_path

M = TypeVar("M", bound=PreTrainedModel)
EncoderSize = Literal["tiny", "mini", "paper"]
EncoderMode = Literal["full", "adapters", "frozen"]
AdapterActivation = Literal["relu", "gelu", "silu", "tanh"]


@dataclass(frozen=True)
class EncoderConfig:
    """How to build and train the speech encoder (None: keep the checkpoint's/preset's value)."""

    # Encoder family (models/encoder_families.py): wav2vec2 (XLS-R, MMS), hubert, wavlm,
    # w2v-bert (w2v-BERT 2.0, Wav2Vec2BertModel), whisper (the encoder of a Whisper folder).
    family: EncoderFamily = "wav2vec2"
    # Whisper only: pad every clip to the 30-s window it was trained on (pad-30s), or cut the
    # window to the batch's longest clip (trim: faster, deviates from pretraining; see
    # models/family_model.py).
    whisper_input: WhisperInput = "pad-30s"
    # Local Hugging Face folder (config.json + weights), e.g. a copy of facebook/wav2vec2-xls-r-300m
    # or the `encoder/` folder of a SAMU model; None builds a randomly initialised `size` preset.
    pretrained: str | None = None
    # Preset when `pretrained` is None: tiny (tests), mini (CPU demo), paper (XLS-R 300M; the
    # family's paper size for the others, see models/encoder_families.py).
    size: EncoderSize = "mini"
    # full: all but the conv feature encoder train; adapters: only bottleneck adapters train;
    # frozen: nothing trains.
    mode: EncoderMode = "full"
    # In `full` mode, also train the conv feature encoder (needed when pretraining from scratch).
    train_feature_encoder: bool = False
    # Bottleneck adapter hidden size as a fraction of the model dimension (paper: 1/4).
    adapter_ratio: float = 0.25
    # Adapter nonlinearity.
    adapter_activation: AdapterActivation = "relu"
    # LayerNorm at the adapter input (not in the paper's adapters).
    adapter_layer_norm: bool = False
    # Recompute each transformer layer in the backward pass to save activation memory.
    gradient_checkpointing: bool = False
    # Probability of skipping a whole transformer layer in training.
    layerdrop: float | None = None
    # SpecAugment-style time masking of the features in training: probability and span (frames).
    mask_time_prob: float | None = None
    mask_time_length: int | None = None
    # Feature-axis masking probability in training.
    mask_feature_prob: float | None = None
    # Dropout on transformer hidden states, attention weights, FFN activations, feature projection.
    hidden_dropout: float | None = None
    attention_dropout: float | None = None
    activation_dropout: float | None = None
    feat_proj_dropout: float | None = None

    def __post_init__(self) -> None:
        # `packaged:<name>` names a checkpoint shipped in the package (samu_st.packaged)
        object.__setattr__(self, "pretrained", resolve_model_path(self.pretrained))
        get_family(self.family)  # ConfigError for an unknown family
        if self.whisper_input not in ("pad-30s", "trim"):
            raise ConfigError(f"encoder.whisper_input: pad-30s or trim, not {self.whisper_input!r}")


# The EncoderConfig fields that override the checkpoint's/preset's config (wav2vec2's names;
# each family maps them to its own attributes, or refuses them).
_OVERRIDES = tuple(WAV2VEC2_OVERRIDES)


def _apply_overrides(config: Any, cfg: EncoderConfig) -> None:
    family = family_of_model_type(getattr(config, "model_type", None)) or get_family("wav2vec2")
    family.apply_overrides(config, {name: getattr(cfg, name) for name in _OVERRIDES})


def wav2vec2_config(cfg: EncoderConfig, **extra: Any) -> Wav2Vec2Config:
    """The ``Wav2Vec2Config`` of ``cfg.size`` with ``cfg``'s overrides and SDPA attention.

    ``extra`` keyword arguments go to ``Wav2Vec2Config`` (e.g. ``vocab_size`` for a CTC head).
    """
    if cfg.size not in WAV2VEC2_PRESETS:
        choices = sorted(WAV2VEC2_PRESETS)
        raise ValueError(f"unknown encoder size {cfg.size!r}; choose one of {choices}")
    kwargs: dict[str, Any] = {**WAV2VEC2_PRESETS[cfg.size], **extra, "attn_implementation": "sdpa"}
    config = Wav2Vec2Config(**kwargs)
    _apply_overrides(config, cfg)
    return config


def load_wav2vec2(folder: str, cfg: EncoderConfig | None = None, **extra: Any) -> Wav2Vec2Model:
    """A ``Wav2Vec2Model`` from a local Hugging Face folder, offline and shape-checked.

    Accepts a base model folder or a ``Wav2Vec2ForPreTraining`` / ``Wav2Vec2ForCTC`` checkpoint
    (their heads are dropped). ``cfg``'s dropout/masking overrides and ``extra`` config values
    are applied. Bottleneck adapters saved with the model are restored. Raises
    ``ModelLoadError`` for a missing folder, config or weights file, a non-wav2vec2 config,
    weights whose shapes differ from the config, or missing encoder weights.
    """
    return load_wav2vec2_model(Wav2Vec2Model, folder, cfg, **extra)


def load_wav2vec2_model(
    model_class: type[M],
    folder: str,
    cfg: EncoderConfig | None = None,
    *,
    allow_missing: Callable[[str], bool] | None = None,
    family: EncoderFamily = "wav2vec2",
    **extra: Any,
) -> M:
    """Like :func:`load_wav2vec2` for any wav2vec2 class (``Wav2Vec2ForCTC``,
    ``Wav2Vec2ForPreTraining``...) or, with ``family``, any class of that family that
    ``from_pretrained`` loads (``HubertModel``, ``WavLMForCTC``, ``Wav2Vec2BertModel``...).
    ``allow_missing(key)`` is True for weights that may be freshly initialised (a new head);
    ``masked_spec_embed`` always may.
    """
    path = require_pretrained_folder(folder, "speech encoder")
    config = read_encoder_config(path, family, **extra)
    if cfg is not None:
        _apply_overrides(config, cfg)
    # Our own adapter weights are "unexpected" to transformers: they are loaded below, so its
    # load report would only confuse.
    has_adapters = bool(getattr(config, CONFIG_KEY, None))
    quiet = quiet_transformers() if has_adapters else contextlib.nullcontext()
    with hf_load_errors(path, "speech encoder"), quiet:
        loaded: Any = model_class.from_pretrained(
            str(path),
            config=config,
            local_files_only=True,
            output_loading_info=True,
            ignore_mismatched_sizes=True,
            attn_implementation=get_family(family).attn_implementation,
            trust_remote_code=False,
        )
    model, info = loaded

    def allowed(key: str) -> bool:
        # The SpecAugment vector is new when masking is switched on for a checkpoint without it.
        fresh = key.endswith("masked_spec_embed")
        return fresh or (allow_missing is not None and allow_missing(key))

    check_loading_info(info, path, allow_missing=allowed)
    if has_adapters:
        restore_bottleneck_adapters(model, str(path))
    return cast(M, model)


def read_encoder_config(path: Path, family: EncoderFamily, **extra: Any) -> Any:
    """The config of the encoder folder ``path``, checked to belong to ``family`` (a
    ``ModelLoadError`` that names the family to set otherwise)."""
    spec = get_family(family)
    # the file's own model_type: a config class reading another family's file keeps its own
    found = _raw_model_type(path)
    with hf_load_errors(path, "speech encoder config"):
        config = spec.config_class.from_pretrained(str(path), local_files_only=True, **extra)
    if found != spec.model_type:
        other = family_of_model_type(found)
        hint = f"; set encoder.family: {other.name}" if other is not None else ""
        raise ModelLoadError(
            f"{path}: config.json has model_type {found!r}, expected {spec.model_type!r} "
            f"(encoder.family {family}){hint}"
        )
    return config


def _raw_model_type(path: Path) -> Any:
    try:
        return json.loads((path / "config.json").read_text("utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError) as error:
        raise ModelLoadError(f"{path / 'config.json'}: not a valid config: {error}") from error


def folder_family(folder: str | Path) -> EncoderFamily:
    """The encoder family of a local model folder, from its ``config.json`` ``model_type``."""
    path = require_pretrained_folder(folder, "speech encoder")
    model_type = _raw_model_type(path)
    family = family_of_model_type(model_type)
    if family is None:
        raise ModelLoadError(f"{path}: model_type {model_type!r} is no speech encoder family")
    return family.name


def build_encoder(cfg: EncoderConfig) -> PreTrainedModel:
    """The encoder ``cfg`` describes, of any family: ``Wav2Vec2Model`` (:func:`build_wav2vec2`)
    or a :class:`~.family_model.FamilySpeechModel` (same interface). Adapters saved in a
    pretrained folder are restored; none are added."""
    if cfg.family == "wav2vec2":
        return build_wav2vec2(cfg)
    from samu_st.models.family_build import build_family_model

    return build_family_model(cfg)


def load_encoder(folder: str | Path, cfg: EncoderConfig | None = None) -> PreTrainedModel:
    """The encoder saved in ``folder`` (family from its config.json; a ``cfg`` of another family
    is an error), with ``cfg``'s overrides; gradient checkpointing is the caller's."""
    family = folder_family(folder)
    if cfg is not None and cfg.family != family:
        raise ModelLoadError(
            f"{folder}: a {family} encoder, but encoder.family is {cfg.family}; "
            f"set encoder.family: {family}"
        )
    if family == "wav2vec2":
        return load_wav2vec2(str(folder), cfg)
    from samu_st.models.family_build import load_family_model

    return load_family_model(str(folder), cfg)


def save_encoder(model: nn.Module, folder: str | Path) -> None:
    """Save an encoder (``Wav2Vec2Model`` or wrapped family model) as a Hugging Face folder
    that :func:`load_encoder` reads back (the family's own format, adapters recorded)."""
    inner: Any = getattr(model, "model", None) if _is_wrapped(model) else model
    cast(Any, inner).save_pretrained(str(folder))


def _is_wrapped(model: nn.Module) -> bool:
    return isinstance(model, FamilySpeechModel)


def build_wav2vec2(cfg: EncoderConfig) -> Wav2Vec2Model:
    """The ``Wav2Vec2Model`` that ``cfg`` describes: loaded from ``cfg.pretrained`` (see
    :func:`load_wav2vec2`) or randomly initialised from the ``cfg.size`` preset.

    SDPA attention; gradient checkpointing if ``cfg.gradient_checkpointing``. No adapters are
    added here (:class:`SpeechEncoder` adds them for ``adapters`` mode), but adapters saved in a
    pretrained folder are restored.
    """
    if cfg.pretrained is not None:
        model = load_wav2vec2(cfg.pretrained, cfg)
    else:
        model = Wav2Vec2Model(wav2vec2_config(cfg))
    if cfg.gradient_checkpointing:
        model.activation_checkpointing_enable()
    return model


def apply_encoder_mode(
    model: nn.Module, mode: EncoderMode, *, train_feature_encoder: bool = False
) -> None:
    """Freeze a ``Wav2Vec2Model`` (or the ``base_model`` of a ``Wav2Vec2ForCTC``) for ``mode``.

    ``full``: everything trains except the conv feature encoder (unless
    ``train_feature_encoder``); ``adapters``: only bottleneck adapters train (the model must
    have them); ``frozen``: nothing trains. Modules outside the base model (a CTC head) are
    left as they are.
    """
    if mode not in ("full", "adapters", "frozen"):
        raise ValueError(f"unknown encoder mode {mode!r}")
    base: Any = model if _is_wrapped(model) else getattr(model, "base_model", model)
    if mode == "adapters" and not has_bottleneck_adapters(base):
        raise ValueError("adapters mode needs bottleneck adapters in the model")
    encoder: Any = base.model if _is_wrapped(base) else base
    encoder.requires_grad_(mode == "full")
    conv_trains = mode == "full" and train_feature_encoder
    for front in front_end_modules(base):
        front.requires_grad_(conv_trains)
        if hasattr(front, "_requires_grad"):
            front = cast(Any, front)
            # transformers makes the conv input require grad while this flag is set; keep it
            # in step so that a frozen conv stack is not back-propagated through.
            front._requires_grad = conv_trains
    for fixed in base.fixed() if _is_wrapped(base) else ():
        fixed.requires_grad_(False)
    if mode == "adapters":
        for adapter in bottleneck_adapters(base):
            adapter.requires_grad_(True)


def front_end_modules(model: nn.Module) -> list[nn.Module]:
    """The modules before the transformer (``train_feature_encoder``): wav2vec2's conv stack,
    or the wrapped family's (:meth:`~.family_model.FamilySpeechModel.front_end`)."""
    if _is_wrapped(model):
        return list(cast(Any, model).front_end())
    base: Any = getattr(model, "base_model", model)
    return [base.feature_extractor]


class EncoderOutput(NamedTuple):
    """Encoder states with their valid lengths and mask (True = real frame)."""

    hidden: torch.Tensor  # (B, T, D), zeros on padded frames
    lengths: torch.Tensor  # (B,) long
    mask: torch.Tensor  # (B, T) bool


def lengths_to_mask(lengths: torch.Tensor, max_length: int) -> torch.Tensor:
    """(B,) lengths -> (B, max_length) bool mask, True on valid positions."""
    positions = torch.arange(max_length, device=lengths.device)
    return positions[None, :] < lengths[:, None]


class SpeechEncoder(nn.Module):
    """Wraps a ``Wav2Vec2Model`` (or a wrapped family model) with explicit lengths and a
    training mode.

    Args:
        model: the transformers model (see :func:`build_encoder`).
        mode: ``full`` (all but the conv feature encoder train), ``adapters`` (only bottleneck
            adapters train; they are added if the model has none), ``frozen`` (nothing trains).
        adapter_ratio, adapter_activation, adapter_layer_norm: for adapters added here.
        train_feature_encoder: in ``full`` mode, the conv feature encoder trains too.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        mode: EncoderMode = "full",
        *,
        adapter_ratio: float = 0.25,
        adapter_activation: str = "relu",
        adapter_layer_norm: bool = False,
        train_feature_encoder: bool = False,
    ) -> None:
        super().__init__()
        if getattr(model.config, "feat_extract_norm", None) == "group":
            warnings.warn(
                "this model uses a GroupNorm feature encoder (feat_extract_norm='group'): "
                "its outputs depend on the padding in a batch; batch utterances of similar length",
                stacklevel=2,
            )
        self.model = model
        if mode == "adapters" and not has_bottleneck_adapters(model):
            add_bottleneck_adapters(model, adapter_ratio, adapter_activation, adapter_layer_norm)
        self.train_feature_encoder = train_feature_encoder
        self.mode: EncoderMode = mode
        self.set_mode(mode)

    @classmethod
    def from_config(cls, cfg: EncoderConfig) -> SpeechEncoder:
        """Build the model (:func:`build_encoder`) and wrap it in ``cfg.mode``."""
        return cls(
            build_encoder(cfg),
            cfg.mode,
            adapter_ratio=cfg.adapter_ratio,
            adapter_activation=cfg.adapter_activation,
            adapter_layer_norm=cfg.adapter_layer_norm,
            train_feature_encoder=cfg.train_feature_encoder,
        )

    def set_mode(self, mode: EncoderMode) -> None:
        """Set ``requires_grad`` of every parameter for ``mode`` (see the class docstring)."""
        apply_encoder_mode(self.model, mode, train_feature_encoder=self.train_feature_encoder)
        self.mode = mode

    @property
    def family(self) -> EncoderFamily:
        """The encoder family (``wav2vec2``, ``hubert``, ``wavlm``, ``w2v-bert``, ``whisper``)."""
        found = family_of_model_type(getattr(self.model.config, "model_type", None))
        return found.name if found is not None else "wav2vec2"

    def save(self, folder: str | Path) -> None:
        """Save the model as a Hugging Face folder of its family (:func:`save_encoder`)."""
        save_encoder(self.model, folder)

    @property
    def config(self) -> Any:
        """The wrapped model's config."""
        return self.model.config

    @property
    def hidden_size(self) -> int:
        """D, the size of the output states."""
        return int(self.model.config.hidden_size)

    @property
    def min_input_samples(self) -> int:
        """The shortest input (samples) that gives one output frame (400 = 25 ms for XLS-R)."""
        if _is_wrapped(self.model):
            return int(cast(Any, self.model).min_input_samples)
        samples = 1
        kernels, strides = self.model.config.conv_kernel, self.model.config.conv_stride
        for kernel, stride in zip(reversed(kernels), reversed(strides), strict=True):
            samples = (samples - 1) * stride + kernel
        return samples

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """(B,) input lengths in samples -> (B,) output lengths in frames (long)."""
        lengths = cast(torch.LongTensor, lengths)
        model: Any = self.model
        return model._get_feat_extract_output_lengths(lengths).to(torch.long)

    def forward(self, input_values: torch.Tensor, lengths: torch.Tensor) -> EncoderOutput:
        """Encode a right-padded batch of waveforms.

        Args:
            input_values: (B, S) float waveforms, normalised per utterance as the model's
                feature extractor does (zero mean, unit variance over the valid samples);
                the values after ``lengths`` are ignored.
            lengths: (B,) long, valid samples per utterance, each >= ``min_input_samples``.

        Returns:
            ``EncoderOutput`` with hidden (B, T, D) (zeros on padded frames), lengths (B,) and
            mask (B, T).
        """
        if input_values.dim() != 2 or lengths.shape != input_values.shape[:1]:
            raise ValueError(
                f"expected input_values (B, S) and lengths (B,), got {tuple(input_values.shape)} "
                f"and {tuple(lengths.shape)}"
            )
        too_short = lengths < self.min_input_samples
        if bool(too_short.any()):
            raise ValueError(
                f"an utterance of {int(lengths.min())} samples is shorter than the encoder's "
                f"receptive field ({self.min_input_samples} samples); filter such clips out"
            )
        sample_mask = lengths_to_mask(lengths, input_values.shape[1])
        output = self.model(input_values, attention_mask=sample_mask.to(torch.long))
        hidden = output.last_hidden_state
        out_lengths = self.output_lengths(lengths).clamp(max=hidden.shape[1])
        mask = lengths_to_mask(out_lengths, hidden.shape[1])
        hidden = hidden.masked_fill(~mask[:, :, None], 0.0)
        return EncoderOutput(hidden=hidden, lengths=out_lengths, mask=mask)


def parameter_count(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters of ``module`` (works on the ``meta`` device)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def trainable_parameter_count(module: nn.Module) -> int:
    """Number of parameters with ``requires_grad``."""
    return parameter_count(module, trainable_only=True)


def encoder_parameter_summary(model: nn.Module) -> dict[str, int]:
    """Parameter counts of a ``SpeechEncoder`` or ``Wav2Vec2Model``.

    Keys: ``encoder`` / ``encoder_trainable`` (the wav2vec2 model without adapters),
    ``feature_encoder`` (its conv stack, included in ``encoder``), ``adapters`` /
    ``adapters_trainable``, and ``total`` / ``trainable`` (encoder + adapters).
    """
    wav2vec2 = model.model if isinstance(model, SpeechEncoder) else model
    adapter_ids = {id(p) for a in bottleneck_adapters(wav2vec2) for p in a.parameters()}
    base = [p for p in wav2vec2.parameters() if id(p) not in adapter_ids]
    adapters = [p for p in wav2vec2.parameters() if id(p) in adapter_ids]
    fronts = front_end_modules(wav2vec2) if _has_front_end(wav2vec2) else []
    counts = {
        "encoder": sum(p.numel() for p in base),
        "encoder_trainable": sum(p.numel() for p in base if p.requires_grad),
        "feature_encoder": sum(parameter_count(m) for m in fronts),
        "adapters": sum(p.numel() for p in adapters),
        "adapters_trainable": sum(p.numel() for p in adapters if p.requires_grad),
    }
    counts["total"] = counts["encoder"] + counts["adapters"]
    counts["trainable"] = counts["encoder_trainable"] + counts["adapters_trainable"]
    return counts


def _has_front_end(model: nn.Module) -> bool:
    base = getattr(model, "base_model", model)
    return _is_wrapped(model) or isinstance(getattr(base, "feature_extractor", None), nn.Module)
