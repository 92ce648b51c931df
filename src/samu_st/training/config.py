"""Training options: optimiser, learning-rate schedule and the loop itself.

Frozen dataclasses, loaded from YAML with :func:`samu_st.config.load_config` like every other
config of the project; a step's config embeds a :class:`TrainConfig` under ``train:``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from samu_st.errors import ConfigError

Precision = Literal["no", "bf16", "fp16"]


@dataclass(frozen=True)
class OptimConfig:
    """Adam / AdamW. ``lr`` is the PEAK learning rate of the tri-stage schedule."""

    name: Literal["adam", "adamw"] = "adamw"  # adam: L2 in the gradient; adamw: decoupled decay
    lr: float = 5e-4  # peak LR of every group that does not set its own "lr"
    betas: tuple[float, float] = (0.9, 0.98)  # fairseq's speech recipes use (0.9, 0.98)
    eps: float = 1e-8  # Adam epsilon (wav2vec2 pretraining in fairseq uses 1e-6)
    weight_decay: float = 0.0  # default for groups that do not set their own
    clip_norm: float = 0.0  # max global L2 grad norm; 0 = no clipping (the norm is still logged)

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ConfigError(f"optim.lr: must be > 0, got {self.lr}")
        if self.clip_norm < 0:
            raise ConfigError(f"optim.clip_norm: must be >= 0, got {self.clip_norm}")


@dataclass(frozen=True)
class ScheduleConfig:
    """fairseq's tri-stage LR: linear warm-up, hold, exponential decay, then constant.

    With ``phase_ratio`` the phase lengths are ``int(max_steps * ratio)`` (fairseq's rule);
    with ``phase_ratio: null`` the explicit ``*_steps`` are used.
    """

    phase_ratio: tuple[float, float, float] | None = (0.1, 0.4, 0.5)  # warm-up, hold, decay; sum 1
    warmup_steps: int = 0  # used only when phase_ratio is null
    hold_steps: int = 0  # used only when phase_ratio is null
    decay_steps: int = 0  # used only when phase_ratio is null
    init_lr_scale: float = 0.01  # warm-up starts at init_lr_scale * peak LR
    final_lr_scale: float = 0.01  # decay ends at (and then stays at) final_lr_scale * peak LR

    def __post_init__(self) -> None:
        if self.phase_ratio is not None:
            if any(r < 0 for r in self.phase_ratio) or abs(sum(self.phase_ratio) - 1.0) > 1e-6:
                raise ConfigError(
                    f"schedule.phase_ratio: must be 3 non-negative numbers summing to 1, "
                    f"got {list(self.phase_ratio)}"
                )
        elif min(self.warmup_steps, self.hold_steps, self.decay_steps) < 0:
            raise ConfigError("schedule.*_steps: must be >= 0")
        if self.final_lr_scale <= 0 or self.init_lr_scale < 0:
            raise ConfigError(
                "schedule: final_lr_scale must be > 0 (its log sets the decay rate) "
                "and init_lr_scale >= 0"
            )


@dataclass(frozen=True)
class TrainConfig:
    """The loop: how long, how often to log/save/validate, precision and failure handling."""

    max_steps: int = 1000  # optimizer updates (skipped non-finite updates do not count)
    grad_accum: int = 1  # micro-batches per update (the loss is averaged over them)
    mixed_precision: Precision = "bf16"  # on GPU; on CPU fp32 unless cpu_bf16 is true
    cpu_bf16: bool = False  # with mixed_precision bf16: on CPU too (fast with AVX512-BF16/AMX)
    cpu: bool = False  # train on CPU even when a GPU is visible
    # Attention of the training forward on CPU. "eager": every transformers module of the
    # model attends with transformers' "eager" implementation for the run (bf16 matmuls, fp32
    # softmax; samu_st.models.attention_impl; the configs are restored at the end); "math":
    # SDPA with PyTorch's plain kernel (it upcasts bf16 to fp32 and runs a masked safe
    # softmax); "default": the model's own setting (SDPA: PyTorch's choice, its flash kernel).
    # Measured 2026-12-05 (2-core AMD EPYC, one thread, bf16 autocast, mini sizes, ~60 s
    # batches of ~1.2-2.3 s clips): step-3 update 0.33-0.34 s eager vs 0.39-0.42 s math; 0.21 s
    # math vs 0.26 s flash on shorter batches (the flash kernel's backward was 29 % of the
    # update). GPUs always keep the model's own setting.
    cpu_attention: Literal["eager", "math", "default"] = "eager"
    # Dropout on CPU: "fast" draws the masks of nn.Dropout modules and of the eager attention's
    # probabilities (with cpu_attention "eager") from 16-bit lanes of 64-bit random integers
    # (samu_st.models.cpu_dropout: the same regulariser, p rounded to a multiple of 1/65536, a
    # different random stream); "torch" is PyTorch's bernoulli_ dropout. Measured 2026-12-05
    # (2-core AMD EPYC, one thread): F.dropout of a (2900, 192) tensor 3.9 ms vs 1.35 ms.
    cpu_dropout: Literal["fast", "torch"] = "fast"
    # Grouped Conv1d modules (wav2vec2's positional conv) on CPU: "channels_last" runs them as
    # a channels-last conv2d (samu_st.models.conv_layout: the same sums in another order;
    # measured 1.85x faster forward + backward at the mini size), "default" as PyTorch does.
    cpu_grouped_conv: Literal["channels_last", "default"] = "channels_last"
    # Under bf16 autocast, store the FROZEN Linear/Conv weights in bf16 for the run instead of
    # letting autocast re-cast them at every forward (it caches casts only of weights that
    # train): the same numbers (tests/test_precision.py), less copying. The fp32 originals are
    # put back when training ends. Not with FSDP/DeepSpeed (they own the parameters).
    bf16_frozen_weights: bool = True
    log_every: int = 10  # updates between log records (JSON lines, tensorboard, progress bar)
    save_every: int = 500  # updates between checkpoints (one is always written at the end)
    keep_last: int = 2  # checkpoints kept on disk (older ones are deleted)
    val_every: int = 0  # updates between validations; 0 = only at the end (if a loader is given)
    seed: int = 1  # seeds python, numpy and torch at the start (plus the process index)
    max_nonfinite_in_a_row: int = 5  # stop after this many consecutive skipped updates
    # Unreadable clips (truncated mp3, NaN samples) are dropped from their batch, logged and
    # counted; more than this many per process stops the run (the corpus needs fixing).
    max_bad_clips: int = 100
    num_workers: int = 0  # DataLoader worker processes
    # DDP: search for TRAINABLE parameters without gradient (on by itself when the model drops
    # layers, see samu_st.training.loop.drops_layers; set it for other partial graphs).
    find_unused_parameters: bool = False
    tensorboard: bool = True  # write tensorboard scalars under <out_dir>/tensorboard
    progress_bar: bool = True  # tqdm bar (shown only on a terminal, main process)
    optim: OptimConfig = field(default_factory=OptimConfig)  # optimiser
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)  # learning-rate schedule

    def __post_init__(self) -> None:
        positive = ("max_steps", "grad_accum", "log_every", "save_every", "keep_last")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name}: must be >= 1, got {getattr(self, name)}")
        if self.max_nonfinite_in_a_row < 1:
            raise ConfigError("train.max_nonfinite_in_a_row: must be >= 1")
        if self.val_every < 0 or self.num_workers < 0 or self.max_bad_clips < 0:
            raise ConfigError(
                "train.val_every, train.num_workers and train.max_bad_clips: must be >= 0"
            )


def resolve_precision(cfg: TrainConfig, on_gpu: bool) -> Precision:
    """The precision actually used: fp32 on CPU unless the user opted into bf16 there.

    fp16 on CPU is never used (no CPU fp16 autocast worth having); bf16 on CPU needs
    ``cpu_bf16: true``: it changes numerics and only pays off on CPUs with AVX512-BF16 or AMX.
    """
    if on_gpu:
        return cfg.mixed_precision
    if cfg.mixed_precision == "bf16" and cfg.cpu_bf16:
        return "bf16"
    return "no"
