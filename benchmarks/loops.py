"""Timing hooks for the two training loops, so both sides are timed over the same updates.

- samu-st's loop calls a task's ``on_step(step)`` before each update (before its batch is
  fetched) and ``batch_seconds`` once per micro-batch: :class:`TimedTask` records both.
- transformers' ``Trainer`` fetches the batch and then calls ``on_step_begin``; a
  :class:`StepTimer` callback records ``on_step_end``, and the collators record the audio of
  each batch they build (batches are built in step order: one worker-less DataLoader).

Either way, update ``u`` spans from the mark ending update ``u - 1`` to the one ending ``u``
(data loading, forward, backward, optimizer step and the loop's bookkeeping).
"""

from __future__ import annotations

import time
from itertools import pairwise
from typing import Any

from torch import nn
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from samu_st.training.config import OptimConfig, TrainConfig
from samu_st.training.schedule import ParamGroup
from samu_st.training.task import LossOutput, Task

PerUpdate = dict[int, tuple[float, float]]  # update number -> (wall seconds, audio seconds)


class TimedTask:
    """A samu-st :class:`~samu_st.training.task.Task` that records when each update starts
    and the audio and padding of each micro-batch."""

    def __init__(self, inner: Task) -> None:
        self.inner = inner
        self.marks: list[float] = []  # perf_counter() before update k + 1
        self.audio: list[float] = []  # seconds of audio of micro-batch k + 1
        self.padding: list[float] = []  # padded share of micro-batch k + 1

    def on_step(self, step: int) -> None:
        self.marks.append(time.perf_counter())
        hook = getattr(self.inner, "on_step", None)
        if hook is not None:
            hook(step)

    def loss(self, model: nn.Module, batch: Any) -> LossOutput:
        return self.inner.loss(model, batch)

    def param_groups(self, model: nn.Module, cfg: OptimConfig) -> list[ParamGroup]:
        return self.inner.param_groups(model, cfg)

    def __getattr__(self, name: str) -> Any:
        # The loop looks up optional hooks (``validate``) with getattr: pass them through.
        return getattr(self.inner, name)

    def batch_seconds(self, batch: Any) -> float:
        seconds = self.inner.batch_seconds(batch)
        self.audio.append(seconds)
        return seconds

    def batch_padding(self, batch: Any) -> float:
        padding = self.inner.batch_padding(batch)
        self.padding.append(padding)
        return padding

    def per_update(self) -> PerUpdate:
        """Updates 1 .. N-1 (the last one has no closing mark)."""
        walls = [b - a for a, b in pairwise(self.marks)]
        return {k + 1: (w, self.audio[k]) for k, w in enumerate(walls)}


class StepTimer(TrainerCallback):
    """Marks the end of every Trainer update."""

    def __init__(self) -> None:
        self.ends: list[float] = []

    def on_step_end(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        **kwargs: Any,
    ) -> None:
        self.ends.append(time.perf_counter())

    def per_update(self, audio: list[float]) -> PerUpdate:
        """Updates 2 .. N, given the audio seconds of each collated batch in order."""
        walls = [b - a for a, b in pairwise(self.ends)]
        return {k + 2: (w, audio[k + 1]) for k, w in enumerate(walls)}


def timed_window(per_update: PerUpdate, first: int, last: int) -> dict[str, float | int]:
    """Throughput over updates ``first..last`` (inclusive), the same on both sides."""
    chosen = [per_update[u] for u in range(first, last + 1) if u in per_update]
    if not chosen:
        raise ValueError(f"no timed update in {first}..{last}")
    wall = sum(w for w, _ in chosen)
    audio = sum(a for _, a in chosen)
    walls = sorted(w for w, _ in chosen)
    rates = sorted(a / w for w, a in chosen)
    return {
        "updates_timed": len(chosen),
        "first_timed_update": first,
        "audio_seconds_timed": round(audio, 2),
        "wall_seconds_timed": round(wall, 3),
        "audio_sec_per_sec": round(audio / wall, 3),
        "median_update_audio_sec_per_sec": round(rates[len(rates) // 2], 3),
        "median_update_seconds": round(walls[len(walls) // 2], 4),
        "mean_batch_audio_seconds": round(audio / len(chosen), 2),
    }


def reference_arguments(
    out_dir: str, batch_size: int, steps: int, lr: float, *, seq2seq: bool, bf16: bool = False
) -> TrainingArguments:
    """``(Seq2Seq)TrainingArguments`` as the notebook / HF example scripts set them, on this
    device: ``group_by_length`` (here ``train_sampling_strategy``) with the precomputed
    ``length`` column, no warm-up, no checkpoint, no logging integrations; fp32 unless
    ``bf16`` (``bf16=True``: accelerate's bf16 autocast, on the CPU too with ``use_cpu``)."""
    import torch
    from transformers import Seq2SeqTrainingArguments

    cls = Seq2SeqTrainingArguments if seq2seq else TrainingArguments
    return cls(
        output_dir=out_dir,
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=1,
        max_steps=steps,
        learning_rate=lr,
        warmup_steps=0,
        train_sampling_strategy="group_by_length",
        length_column_name="length",
        remove_unused_columns=False,  # the collators pick their columns; `length` is kept
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(),
        bf16=bf16,
        seed=1,
    )


def ours_train_config(steps: int, lr: float) -> TrainConfig:
    """samu-st's side of a training benchmark: bf16 autocast as configs/mini.yaml, no logging
    or checkpoint work inside the timed updates."""
    return TrainConfig(
        max_steps=steps,
        mixed_precision="bf16",
        cpu_bf16=True,
        log_every=steps,
        save_every=steps,
        keep_last=1,
        tensorboard=False,
        progress_bar=False,
        optim=OptimConfig(lr=lr, clip_norm=5.0),
    )


def trainer_settings(
    trainer: str, batch_size: int, lr: float, attention: Any, **extra: Any
) -> dict[str, Any]:
    """The ``settings`` of a same-work ``(Seq2Seq)Trainer(bf16=True)`` reference's record."""
    return {
        "trainer": trainer,
        "bf16": True,
        "use_cpu": True,
        "train_sampling_strategy": "group_by_length",
        "per_device_train_batch_size": batch_size,
        "learning_rate": lr,
        "attention": attention,
        **extra,
    }
