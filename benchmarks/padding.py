"""Benchmark ``padding``: padded share of the training batches of both batching schemes.

Ours: :class:`~samu_st.data.sampler.DurationBatchSampler` at ``max_duration`` seconds of padded
speech per batch (configs/mini.yaml ``train_st``: 60 s). Reference: transformers'
``LengthGroupedSampler`` (what ``group_by_length`` uses) with the batch size that gives the
same mean real audio per batch, and, for context, plain random batches of that size (the
``Trainer`` default). Padding = ``1 - real samples / (rows × longest row)`` over an epoch,
averaged over a few epochs; the durations are the mini-CoVoST training clips.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from transformers.trainer_pt_utils import LengthGroupedSampler

from benchmarks.common import Record, ratio
from benchmarks.corpus import Context, read_split
from samu_st.audio import SAMPLE_RATE
from samu_st.data.sampler import DurationBatchSampler, padding_fraction

TARGET = 0.05  # the goal: at most 5% padding


def ours_batches(durations: Sequence[float], max_duration: float, epoch: int) -> list[list[int]]:
    """Dataset indices of our sampler's batches in ``epoch``."""
    sampler = DurationBatchSampler(durations, max_duration, shuffle=True, seed=1)
    return [[key.idx for key in batch] for batch in sampler.global_batches(epoch)]


def matched_batch_size(durations: Sequence[float], max_duration: float) -> int:
    """The fixed batch size whose batches hold, on average, as much audio as ours do."""
    batches = ours_batches(durations, max_duration, 0)
    mean_audio = float(np.sum(durations)) / len(batches)
    return max(1, round(mean_audio / float(np.mean(durations))))


def hf_batches(
    durations: Sequence[float], batch_size: int, epoch: int, grouped: bool
) -> list[list[int]]:
    """Batches of the Trainer's sampler: ``LengthGroupedSampler`` (grouped) or a random one."""
    generator = torch.Generator().manual_seed(1000 + epoch)
    if grouped:
        lengths = [round(d * SAMPLE_RATE) for d in durations]
        order = list(LengthGroupedSampler(batch_size, lengths=lengths, generator=generator))
    else:
        order = torch.randperm(len(durations), generator=generator).tolist()
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def _stats(durations: Sequence[float], epochs: list[list[list[int]]]) -> dict[str, float]:
    d = np.asarray(durations)
    per_batch = [
        1.0 - float(d[b].sum()) / (float(d[b].max()) * len(b))
        for batches in epochs
        for b in batches
    ]
    return {
        "padding": round(float(np.mean([padding_fraction(d, b) for b in epochs])), 5),
        "mean_batch_padding": round(float(np.mean(per_batch)), 5),
        "worst_batch_padding": round(float(np.max(per_batch)), 5),
        "batches_per_epoch": round(float(np.mean([len(b) for b in epochs])), 1),
        "mean_batch_audio_seconds": round(
            float(d.sum()) / float(np.mean([len(b) for b in epochs])), 2
        ),
    }


def run(ctx: Context) -> Record:
    sz = ctx.sizes
    rec = Record("padding", ctx.quick)
    durations = [u.duration for u in read_split(ctx.corpus(), "train")]
    size = matched_batch_size(durations, sz.st_max_duration)
    epochs = range(sz.padding_epochs)
    ours = _stats(durations, [ours_batches(durations, sz.st_max_duration, e) for e in epochs])
    grouped = _stats(durations, [hf_batches(durations, size, e, True) for e in epochs])
    random = _stats(durations, [hf_batches(durations, size, e, False) for e in epochs])
    rec.setup = {
        "data": "mini-CoVoST train split",
        "utterances": len(durations),
        "mean_duration_seconds": round(float(np.mean(durations)), 3),
        "epochs": sz.padding_epochs,
        "max_duration_seconds": sz.st_max_duration,
        "reference_batch_size": size,
    }
    rec.ours = {"method": f"DurationBatchSampler(max_duration={sz.st_max_duration:g})", **ours}
    rec.reference = {
        "method": f"LengthGroupedSampler(batch_size={size}) (Trainer group_by_length)",
        "available": True,
        **grouped,
        "random_batches": random,
    }
    rec.ratios = {
        "padding": ratio(ours["padding"], grouped["padding"], higher_is_better=False),
        "padding_vs_random": ratio(ours["padding"], random["padding"], higher_is_better=False),
    }
    rec.headline = "padding"
    rec.target = {"ours_padding_at_most": TARGET, "met": ours["padding"] <= TARGET}
    rec.notes = [
        "padding = 1 - real samples / (rows x longest row), over whole epochs",
        "LengthGroupedSampler sorts random mega-batches of min(50, N // (4 x batch_size)) "
        "batches by length; our sampler sorts pools of 10,000 utterances (here: the whole "
        "corpus) and fills batches up to max_duration of padded speech",
    ]
    return rec
