"""The speech encoder: transformers' ``Wav2Vec2Model`` (XLS-R architecture) with freezing modes.

- :class:`EncoderConfig` — where the encoder comes from (a local folder or a size preset) and how
  it trains (``full`` / ``adapters`` / ``frozen``).
- :func:`wav2vec2_config` / :func:`build_wav2vec2` — the ``Wav2Vec2Config`` of a preset, and the
  model from a preset or a local Hugging Face folder (offline, safe loading, SDPA attention).
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
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, TypeVar, cast

import torch
from torch import nn
from transformers import PreTrainedModel, Wav2Vec2Config, Wav2Vec2Model

from samu_st.errors import ModelLoadError
from samu_st.models.adapters import (
    CONFIG_KEY,
    add_bottleneck_adapters,
    bottleneck_adapters,
    has_bottleneck_adapters,
    restore_bottleneck_adapters,
)
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

    # Local Hugging Face folder (config.json + weights), e.g. a copy of facebook/wav2vec2-xls-r-300m
    # or the `encoder/` folder of a SAMU model; None builds a randomly initialised `size` preset.
    pretrained: str | None = None
    # Preset when `pretrained` is None: tiny (tests), mini (CPU demo), paper (XLS-R 300M).
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


_XLSR_CONV: dict[str, Any] = {
    "conv_kernel": (10, 3, 3, 3, 3, 2, 2),
    "conv_stride": (5, 2, 2, 2, 2, 2, 2),
    "feat_extract_norm": "layer",
    "feat_extract_activation": "gelu",
    "do_stable_layer_norm": True,
    "conv_bias": True,
    "hidden_act": "gelu",
}

_PRESETS: dict[str, dict[str, Any]] = {
    # The exact facebook/wav2vec2-xls-r-300m architecture and training defaults.
    "paper": {
        **_XLSR_CONV,
        "conv_dim": (512,) * 7,
        "hidden_size": 1024,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "intermediate_size": 4096,
        "num_conv_pos_embeddings": 128,
        "num_conv_pos_embedding_groups": 16,
        "hidden_dropout": 0.1,
        "attention_dropout": 0.1,
        "activation_dropout": 0.0,
        "feat_proj_dropout": 0.1,
        "layerdrop": 0.1,
        "mask_time_prob": 0.075,
        "mask_time_length": 10,
        "codevector_dim": 768,
        "proj_codevector_dim": 768,
    },
    # CPU-trainable (DESIGN.md §6 probe): 64-channel convs, 4 layers of 192.
    "mini": {
        **_XLSR_CONV,
        "conv_dim": (64,) * 7,
        "hidden_size": 192,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "intermediate_size": 768,
        "num_conv_pos_embeddings": 32,
        "num_conv_pos_embedding_groups": 4,
        "hidden_dropout": 0.1,
        "attention_dropout": 0.1,
        "activation_dropout": 0.0,
        "feat_proj_dropout": 0.1,
        "layerdrop": 0.0,
        "mask_time_prob": 0.05,
        "mask_time_length": 5,
        "num_codevectors_per_group": 64,
        "codevector_dim": 128,
        "proj_codevector_dim": 128,
        "num_negatives": 50,
    },
    # For tests: 2 layers of 32.
    "tiny": {
        **_XLSR_CONV,
        "conv_dim": (16,) * 7,
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "num_conv_pos_embeddings": 8,
        "num_conv_pos_embedding_groups": 2,
        "layerdrop": 0.0,
        "mask_time_prob": 0.05,
        "mask_time_length": 2,
        "num_codevectors_per_group": 8,
        "codevector_dim": 16,
        "proj_codevector_dim": 16,
        "num_negatives": 10,
    },
}

_OVERRIDES = (
    "layerdrop",
    "mask_time_prob",
    "mask_time_length",
    "mask_feature_prob",
    "hidden_dropout",
    "attention_dropout",
    "activation_dropout",
    "feat_proj_dropout",
)


def _apply_overrides(config: Wav2Vec2Config, cfg: EncoderConfig) -> None:
    for name in _OVERRIDES:
        value = getattr(cfg, name)
        if value is not None:
            setattr(config, name, value)


def wav2vec2_config(cfg: EncoderConfig, **extra: Any) -> Wav2Vec2Config:
    """The ``Wav2Vec2Config`` of ``cfg.size`` with ``cfg``'s overrides and SDPA attention.

    ``extra`` keyword arguments go to ``Wav2Vec2Config`` (e.g. ``vocab_size`` for a CTC head).
    """
    if cfg.size not in _PRESETS:
        raise ValueError(f"unknown encoder size {cfg.size!r}; choose one of {sorted(_PRESETS)}")
    kwargs: dict[str, Any] = {**_PRESETS[cfg.size], **extra, "attn_implementation": "sdpa"}
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
    **extra: Any,
) -> M:
    """Like :func:`load_wav2vec2` for any wav2vec2 class (``Wav2Vec2ForCTC``,
    ``Wav2Vec2ForPreTraining``...). ``allow_missing(key)`` is True for weights that may be
    freshly initialised (a new head); ``masked_spec_embed`` always may.
    """
    path = require_pretrained_folder(folder, "speech encoder")
    with hf_load_errors(path, "speech encoder config"):
        config = Wav2Vec2Config.from_pretrained(str(path), local_files_only=True, **extra)
    if getattr(config, "model_type", None) != "wav2vec2":
        raise ModelLoadError(
            f"{path}: config.json has model_type {getattr(config, 'model_type', None)!r}, "
            "expected 'wav2vec2' (XLS-R format)"
        )
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
            attn_implementation="sdpa",
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
    base: Any = getattr(model, "base_model", model)
    if mode == "adapters" and not has_bottleneck_adapters(base):
        raise ValueError("adapters mode needs bottleneck adapters in the model")
    base.requires_grad_(mode == "full")
    conv_trains = mode == "full" and train_feature_encoder
    base.feature_extractor.requires_grad_(conv_trains)
    # transformers makes the conv input require grad while this flag is set; keep it in step
    # so that a frozen conv stack is not back-propagated through.
    base.feature_extractor._requires_grad = conv_trains
    if mode == "adapters":
        for adapter in bottleneck_adapters(base):
            adapter.requires_grad_(True)


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
    """Wraps a ``Wav2Vec2Model`` with explicit lengths and a training mode.

    Args:
        model: the transformers model (see :func:`build_wav2vec2`).
        mode: ``full`` (all but the conv feature encoder train), ``adapters`` (only bottleneck
            adapters train; they are added if the model has none), ``frozen`` (nothing trains).
        adapter_ratio, adapter_activation, adapter_layer_norm: for adapters added here.
        train_feature_encoder: in ``full`` mode, the conv feature encoder trains too.
    """

    def __init__(
        self,
        model: Wav2Vec2Model,
        mode: EncoderMode = "full",
        *,
        adapter_ratio: float = 0.25,
        adapter_activation: str = "relu",
        adapter_layer_norm: bool = False,
        train_feature_encoder: bool = False,
    ) -> None:
        super().__init__()
        if model.config.feat_extract_norm == "group":
            warnings.warn(
                "this wav2vec2 model uses a GroupNorm feature encoder (feat_extract_norm='group'): "
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
        """Build the model (:func:`build_wav2vec2`) and wrap it in ``cfg.mode``."""
        return cls(
            build_wav2vec2(cfg),
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
    def config(self) -> Wav2Vec2Config:
        """The wrapped model's config."""
        return self.model.config

    @property
    def hidden_size(self) -> int:
        """D, the size of the output states."""
        return int(self.model.config.hidden_size)

    @property
    def min_input_samples(self) -> int:
        """The shortest input (samples) that gives one output frame (400 = 25 ms for XLS-R)."""
        samples = 1
        kernels, strides = self.model.config.conv_kernel, self.model.config.conv_stride
        for kernel, stride in zip(reversed(kernels), reversed(strides), strict=True):
            samples = (samples - 1) * stride + kernel
        return samples

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """(B,) input lengths in samples -> (B,) output lengths in frames (long)."""
        lengths = cast(torch.LongTensor, lengths)
        return self.model._get_feat_extract_output_lengths(lengths).to(torch.long)

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
    conv = getattr(wav2vec2, "feature_extractor", None)
    counts = {
        "encoder": sum(p.numel() for p in base),
        "encoder_trainable": sum(p.numel() for p in base if p.requires_grad),
        "feature_encoder": parameter_count(conv) if isinstance(conv, nn.Module) else 0,
        "adapters": sum(p.numel() for p in adapters),
        "adapters_trainable": sum(p.numel() for p in adapters if p.requires_grad),
    }
    counts["total"] = counts["encoder"] + counts["adapters"]
    counts["trainable"] = counts["encoder_trainable"] + counts["adapters_trainable"]
    return counts
