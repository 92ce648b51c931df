"""The one training loop every step plugs into (see :mod:`samu_st.training.task`).

Built on ``accelerate``: the same code runs on a CPU, a GPU, or many processes under
``accelerate launch`` / ``torchrun`` (DDP; FSDP and DeepSpeed through an accelerate config).
Only the model and the optimizer go through ``accelerator.prepare``:

- the DataLoader is built here from the caller's batch sampler, because accelerate's re-wrapped
  samplers would re-shard batches that the caller's sampler already sharded per rank and would
  lose the exact position needed for resuming;
- the LR scheduler is stepped here once per applied update, because accelerate's scheduler
  wrapper steps it ``num_processes`` times per update.

Gradient accumulation uses ``accelerator.accumulate`` (no DDP all-reduce on inner micro-batches);
an update always consumes exactly ``grad_accum`` micro-batches, so checkpoints fall on update
boundaries and epochs may end in the middle of an update.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState, PartialState
from accelerate.utils import (
    DistributedDataParallelKwargs,
    DistributedType,
    GradientAccumulationPlugin,
    send_to_device,
    set_seed,
)
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.data import Dataset

from samu_st.errors import ModelLoadError, SamuError
from samu_st.models.conv_layout import channels_last_convs, grouped_conv1d_modules
from samu_st.models.precision import bf16_weights
from samu_st.threads import ThreadBudget
from samu_st.training.checkpoint import (
    WEIGHTS,
    Checkpoint,
    CheckpointManager,
    capture_rng,
    load_trainable_state,
    restore_rng,
    trainable_state,
)
from samu_st.training.config import TrainConfig, resolve_precision
from samu_st.training.cpu_run import cpu_run_settings
from samu_st.training.lock import locked_folder
from samu_st.training.schedule import build_optimizer, build_scheduler, check_param_groups
from samu_st.training.task import BatchSampler, BatchStream, Task
from samu_st.training.tracking import RunLogger, Window, write_config

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"


class NonFiniteLossError(SamuError):
    """Too many consecutive updates with a non-finite loss or gradient norm."""


@dataclass
class TrainResult:
    """What a call to :func:`train` did (the same on every process, but ``validations``)."""

    step: int  # updates applied in total (including before a resume)
    resumed_from: int | None  # the checkpoint step this call resumed from
    last_loss: float  # mean loss of the last logged window
    nonfinite_skipped: int  # updates skipped for a non-finite loss / grad norm (whole run)
    overflow_skipped: int  # fp16 updates skipped by the grad scaler (whole run)
    bad_clips: list[str] = field(default_factory=list)  # unreadable clips skipped (this call)
    history: list[dict[str, Any]] = field(default_factory=list)  # train records of this call
    validations: list[dict[str, Any]] = field(default_factory=list)  # val records (main only)
    checkpoint: Path | None = None  # the final checkpoint folder


@dataclass
class _Counters:
    step: int = 0
    nonfinite_total: int = 0
    nonfinite_in_a_row: int = 0
    overflow_total: int = 0


def _use_cpu(cfg: TrainConfig) -> bool:
    return cfg.cpu or not torch.cuda.is_available()


def process_rank_and_count(cfg: TrainConfig) -> tuple[int, int]:
    """``(rank, world_size)`` of this process, for building the per-rank batch sampler."""
    state = PartialState(cpu=_use_cpu(cfg))
    return state.process_index, state.num_processes


_LAYERDROP_FIELDS = ("layerdrop", "encoder_layerdrop", "decoder_layerdrop")


def drops_layers(model: nn.Module) -> bool:
    """True when a submodule skips whole layers at random in training (wav2vec2's
    ``layerdrop``, 0.1 in the XLS-R checkpoints; MBART's ``decoder_layerdrop``). On such an
    update the skipped layers' trainable parameters (weights, adapters) get no gradient, and
    DDP must search for them (``find_unused_parameters``) or it fails at the next update."""
    for module in model.modules():
        config = getattr(module, "config", None)
        for name in _LAYERDROP_FIELDS:
            value = getattr(config, name, 0.0) if config is not None else 0.0
            if isinstance(value, int | float) and value > 0:
                return True
    return False


def make_accelerator(cfg: TrainConfig, find_unused: bool = False) -> Accelerator:
    """A fresh Accelerator for ``cfg`` (one process may train several steps in a row);
    ``find_unused``: DDP searches for parameters without gradient (also if the config asks)."""
    # Accelerate keeps precision and accumulation in process-wide singletons that refuse a
    # change; a pipeline running steps with different settings in one process must reset them.
    AcceleratorState._reset_state()
    GradientState._reset_state()
    use_cpu = _use_cpu(cfg)
    plugin = GradientAccumulationPlugin(
        num_steps=cfg.grad_accum, adjust_scheduler=False, sync_with_dataloader=False
    )
    ddp = DistributedDataParallelKwargs(
        find_unused_parameters=cfg.find_unused_parameters or find_unused
    )
    return Accelerator(
        cpu=use_cpu,
        mixed_precision=resolve_precision(cfg, on_gpu=not use_cpu),
        gradient_accumulation_plugin=plugin,
        kwargs_handlers=[ddp],
    )


def _all_ok(accelerator: Accelerator, ok: bool) -> bool:
    """True on every process iff ``ok`` on every process (a barrier too)."""
    if accelerator.num_processes == 1:
        return ok
    flag = torch.tensor([0.0 if ok else 1.0], device=accelerator.device)
    return float(accelerator.reduce(flag, reduction="sum").item()) == 0.0


class _Trainer:
    def __init__(
        self,
        task: Task,
        model: nn.Module,
        stream: BatchStream,
        cfg: TrainConfig,
        out_dir: Path,
        accelerator: Accelerator,
        val_loader: Any,
    ) -> None:
        self.task, self.cfg, self.out_dir, self.acc = task, cfg, out_dir, accelerator
        self.raw_model, self.val_loader = model, val_loader
        # found once, entered per forward (train.cpu_grouped_conv)
        cpu_layout = accelerator.device.type == "cpu" and cfg.cpu_grouped_conv == "channels_last"
        self.grouped_convs = grouped_conv1d_modules(model) if cpu_layout else []
        groups = check_param_groups(model, task.param_groups(model, cfg.optim))
        optimizer = build_optimizer(groups, cfg.optim)
        self.scheduler = build_scheduler(optimizer, cfg.schedule, cfg.max_steps)
        self.model, self.optimizer = accelerator.prepare(model, optimizer)
        self.group_names = [str(g.get("name", f"group{i}")) for i, g in enumerate(groups)]
        self.stream = stream
        self.ckpt = CheckpointManager(
            out_dir / CHECKPOINTS,
            cfg.keep_last,
            accelerator.process_index,
            accelerator.num_processes,
            all_ok=lambda ok: _all_ok(accelerator, ok),
        )
        self.counters = _Counters()
        self.window = Window()
        self.saved_step = -1
        self.validated_step = -1
        self.last_lr: list[float] = []
        self.history: list[dict[str, Any]] = []
        self.validations: list[dict[str, Any]] = []

    # --- one update ---------------------------------------------------------------------------

    def _micro_batches(self) -> tuple[torch.Tensor, dict[str, float]]:
        """Forward/backward ``grad_accum`` micro-batches; local sums for the update's stats."""
        sums = torch.zeros(6, dtype=torch.float64)  # loss, finite, non-finite, sec, pad, items
        metrics: dict[str, float] = {}
        for _ in range(self.cfg.grad_accum):
            batch = self.stream.next()
            seconds = self.task.batch_seconds(batch)
            padding = self.task.batch_padding(batch)
            batch = send_to_device(batch, self.acc.device)
            with self.acc.accumulate(self.model):
                with self.acc.autocast(), self._attention(), self._conv_layout():
                    out = self.task.loss(self.model, batch)
                # Always backward, even a non-finite loss: under DDP every process must join
                # the gradient all-reduce; the update is then skipped everywhere.
                self.acc.backward(out.loss)
            value = float(out.loss.detach().float())
            finite = math.isfinite(value)
            row = [value if finite else 0.0, finite, not finite, seconds, padding, out.num_items]
            sums += torch.tensor(row, dtype=torch.float64)
            for key, v in out.metrics.items():
                metrics[key] = metrics.get(key, 0.0) + v / self.cfg.grad_accum
        return sums, metrics

    def _attention(self) -> Any:
        """The SDPA backend of the training forward (``train.cpu_attention``)."""
        if self.acc.device.type == "cpu" and self.cfg.cpu_attention == "math":
            return sdpa_kernel(SDPBackend.MATH)
        return contextlib.nullcontext()

    def _conv_layout(self) -> Any:
        """Grouped Conv1d modules in channels-last form on the CPU (``train.cpu_grouped_conv``)."""
        if self.grouped_convs:
            return channels_last_convs(self.grouped_convs)
        return contextlib.nullcontext()

    def _frozen_weights(self) -> Any:
        """Frozen Linear/Conv weights stored in bf16 for the run (``train.bf16_frozen_weights``):
        under bf16 autocast the same numbers as autocast's own casts, made once."""
        plain = (DistributedType.NO, DistributedType.MULTI_GPU, DistributedType.MULTI_CPU)
        if (
            self.cfg.bf16_frozen_weights
            and self.acc.mixed_precision == "bf16"
            and self.acc.distributed_type in plain
        ):
            return bf16_weights(self.raw_model, frozen_only=True)
        return contextlib.nullcontext()

    def _grad_norm(self) -> float | None:
        max_norm = self.cfg.optim.clip_norm if self.cfg.optim.clip_norm > 0 else math.inf
        norm = self.acc.clip_grad_norm_(self.model.parameters(), max_norm)
        return None if norm is None else float(norm)

    def _apply(self, loss_bad: bool, grad_norm: float | None) -> bool:
        """Optimizer step, or skip it; True if the update was applied."""
        c, scaler = self.counters, self.acc.scaler
        norm_bad = grad_norm is not None and not math.isfinite(grad_norm)
        # With fp16, an overflowing gradient of a finite loss is the grad scaler's business.
        if loss_bad or (norm_bad and scaler is None):
            self.optimizer.zero_grad()
            if scaler is not None:
                scaler.update()  # clip_grad_norm_ unscaled; lower the scale, reset the stage
            c.nonfinite_total += 1
            c.nonfinite_in_a_row += 1
            log.warning(
                "update %d skipped: non-finite %s (%d in a row)",
                c.step + 1,
                "loss" if loss_bad else "gradient norm",
                c.nonfinite_in_a_row,
            )
            if c.nonfinite_in_a_row >= self.cfg.max_nonfinite_in_a_row:
                self._stop_nonfinite()
            return False
        self.last_lr = [float(g["lr"]) for g in self.optimizer.param_groups]  # this update's
        self.optimizer.step()
        self.optimizer.zero_grad()
        if self.acc.optimizer_step_was_skipped:
            c.overflow_total += 1
            return False
        self.scheduler.step()
        c.nonfinite_in_a_row = 0
        c.step += 1
        return True

    def _stop_nonfinite(self) -> None:
        c = self.counters
        path = self.ckpt.checkpoints()[-1] if self.saved_step == c.step else self._save()
        raise NonFiniteLossError(
            f"{c.nonfinite_in_a_row} updates in a row had a non-finite loss or gradient norm "
            f"(at update {c.step + 1}, epoch {self.stream.epoch}); training stopped. The last "
            f"good state (update {c.step}) is saved in {path}. Lower the learning rate, clip "
            f"gradients (optim.clip_norm), or check the data."
        )

    def update(self, logger: RunLogger) -> None:
        on_step = getattr(self.task, "on_step", None)
        if on_step is not None:
            on_step(self.counters.step)
        start = time.perf_counter()
        local, metrics = self._micro_batches()
        grad_norm = self._grad_norm()
        sums = self.acc.reduce(local.to(self.acc.device), reduction="sum").cpu().tolist()
        applied = self._apply(sums[2] > 0, grad_norm)
        w = self.window
        w.wall += time.perf_counter() - start
        w.audio_seconds += sums[3]
        w.padding_sum += sums[4]
        w.batches += sums[1] + sums[2]
        w.items += sums[5]
        if not applied:
            return
        w.loss_sum += sums[0]
        w.loss_n += sums[1]
        w.grad_norm_sum += grad_norm if grad_norm is not None else 0.0
        w.updates += 1
        for key, v in metrics.items():
            w.metrics[key] = w.metrics.get(key, 0.0) + v
        logger.advance()
        self._after_update(logger)

    def _after_update(self, logger: RunLogger) -> None:
        step, cfg = self.counters.step, self.cfg
        if step % cfg.log_every == 0:
            self._log(logger)
        if cfg.val_every > 0 and step % cfg.val_every == 0:
            self._validate(logger)
        if step % cfg.save_every == 0 and step < cfg.max_steps:
            self._save()

    # --- logging, validation, checkpoints ---------------------------------------------------

    def _log(self, logger: RunLogger) -> None:
        if self.window.updates == 0:
            return
        c = self.counters
        lr = dict(zip(self.group_names, self.last_lr, strict=True))
        record = self.window.record(c.step, self.stream.epoch, lr)
        record.update(skipped_nonfinite=c.nonfinite_total, skipped_overflow=c.overflow_total)
        self.history.append(record)
        logger.log(record)
        self.window = Window()

    def _validate(self, logger: RunLogger) -> None:
        validate = getattr(self.task, "validate", None)
        if validate is None or self.val_loader is None or self.validated_step == self.counters.step:
            return
        self.validated_step = self.counters.step
        if self.acc.is_main_process:
            rng = capture_rng()  # validation must not shift the training's random stream
            self.raw_model.eval()
            with torch.no_grad(), self.acc.autocast(), self._conv_layout():
                metrics = validate(self.raw_model, self.val_loader)
            self.raw_model.train()
            restore_rng(rng)
            record = {"kind": "val", "step": self.counters.step, **metrics}
            self.validations.append(record)
            logger.log(record)
        self.acc.wait_for_everyone()

    def _save(self) -> Path:
        shared = None
        if self.acc.is_main_process:
            scaler = self.acc.scaler
            shared = {
                "weights": trainable_state(self.raw_model),
                "optimizer": {
                    "optimizer": self.optimizer.state_dict(),
                    "scaler": scaler.state_dict() if scaler is not None else None,
                },
                "scheduler": self.scheduler.state_dict(),
            }
        rank_state = {"rng": capture_rng(), "stream": self.stream.state_dict()}
        trainer = {**vars(self.counters), "time": time.time()}
        path = self.ckpt.save(self.counters.step, shared, rank_state, trainer)
        self.saved_step = self.counters.step
        return path

    def _restore(self, ck: Checkpoint) -> None:
        load_trainable_state(self.raw_model, ck.weights, ck.path / WEIGHTS)
        try:
            self.optimizer.load_state_dict(ck.optimizer["optimizer"])
        except ValueError as err:
            raise ModelLoadError(
                f"{ck.path}: optimizer state does not match the param groups ({err})"
            ) from None
        if self.acc.scaler is not None and ck.optimizer.get("scaler"):
            self.acc.scaler.load_state_dict(ck.optimizer["scaler"])
        self.scheduler.load_state_dict(ck.scheduler)
        self.stream.load_state_dict(ck.rank["stream"])
        known = vars(_Counters())
        self.counters = _Counters(**{k: int(v) for k, v in ck.trainer.items() if k in known})
        self.saved_step = self.counters.step
        self.validated_step = self.counters.step
        restore_rng(ck.rank["rng"])  # last: nothing may draw random numbers after it

    def start(self, resume: bool) -> int | None:
        """Load the newest checkpoint when resuming; returns its step."""
        self.ckpt.clean_partial()
        found = self.ckpt.checkpoints()
        if found and not resume:
            raise SamuError(
                f"{self.out_dir}: already holds checkpoints (newest {found[-1].name}); resume "
                f"that run (--resume) or choose another output folder"
            )
        ck = self.ckpt.load_latest() if resume else None
        if resume and ck is None:
            log.warning("%s: no checkpoint to resume from; starting from scratch", self.out_dir)
        step = ck.step if ck is not None else -1
        steps = self.acc.gather(torch.tensor([step], device=self.acc.device))
        if int(steps.min()) != int(steps.max()):
            raise SamuError(f"{self.out_dir}: processes found different checkpoints to resume")
        if ck is None:
            return None
        self._restore(ck)
        self.ckpt.set_aside_newer(ck.step)
        log.info("resumed from %s (update %d)", ck.path, ck.step)
        return ck.step

    def finish(self, logger: RunLogger) -> Path:
        if self.window.updates:
            self._log(logger)
        self._validate(logger)
        if self.saved_step != self.counters.step:
            return self._save()
        return self.ckpt.checkpoints()[-1]

    def run(self, resumed_from: int | None) -> TrainResult:
        cfg = self.cfg
        logger = RunLogger(self.out_dir, self.acc.is_main_process, cfg.tensorboard,
                           cfg.progress_bar, cfg.max_steps, resumed_from or 0)  # fmt: skip
        try:
            self.model.train()
            threads = ThreadBudget.from_env()  # cores a finished parallel branch left
            with self._frozen_weights(), cpu_run_settings(self.raw_model, cfg, self.acc.device):
                while self.counters.step < cfg.max_steps:
                    threads.poll()
                    self.update(logger)
                final = self.finish(logger)
        finally:
            logger.close()
        c = self.counters
        return TrainResult(
            step=c.step,
            resumed_from=resumed_from,
            last_loss=self.history[-1]["loss"] if self.history else math.nan,
            nonfinite_skipped=c.nonfinite_total,
            overflow_skipped=c.overflow_total,
            bad_clips=list(self.stream.bad_clips),
            history=self.history,
            validations=self.validations,
            checkpoint=final,
        )


def train(
    task: Task,
    model: nn.Module,
    train_dataset: Dataset[Any],
    collate_fn: Callable[[list[Any]], Any],
    batch_sampler: BatchSampler,
    cfg: TrainConfig,
    out_dir: str | Path,
    resume: bool = False,
    val_loader: Any = None,
    run_config: Any = None,
) -> TrainResult:
    """Train ``model`` on ``task`` for ``cfg.max_steps`` updates; see the module docstring.

    ``batch_sampler`` yields this process's micro-batches (see :class:`BatchSampler`); a batch
    from ``collate_fn`` is a tensor, a (nested) mapping or sequence of tensors, or an object with
    ``.to(device)``. ``run_config`` is the full config object written to ``config.yaml`` (the
    ``TrainConfig`` when not given). With ``resume``, the newest readable checkpoint in
    ``out_dir`` is continued exactly; without it, ``out_dir`` must hold no checkpoint.
    The model is trained in place (on the training device).
    """
    out_dir = Path(out_dir)
    layerdrop = drops_layers(model)
    acc = make_accelerator(cfg, find_unused=layerdrop)
    if acc.num_processes > 1 and layerdrop and not cfg.find_unused_parameters:
        log.info("layerdrop > 0: DDP searches for parameters a skipped layer left unused")
    set_seed(cfg.seed, device_specific=True)
    with locked_folder(out_dir, acc.is_main_process, lambda ok: _all_ok(acc, ok)):
        pin = acc.device.type == "cuda"
        stream = BatchStream(train_dataset, batch_sampler, collate_fn, cfg.num_workers,
                             cfg.seed, acc.process_index, pin, cfg.max_bad_clips)  # fmt: skip
        trainer = _Trainer(task, model, stream, cfg, out_dir, acc, val_loader)
        resumed_from = trainer.start(resume)
        if acc.is_main_process:
            write_config(out_dir, run_config if run_config is not None else cfg, resumed_from)
        try:
            result = trainer.run(resumed_from)
        finally:
            stream.close()
        if result.bad_clips:
            log.warning("%d unreadable clip(s) skipped in training on process %d, e.g. %s",
                        len(result.bad_clips), acc.process_index, result.bad_clips[0])  # fmt: skip
        return result
