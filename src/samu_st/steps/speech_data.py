"""Glue shared by the speech steps' runners: training data for this process, a dev loader,
seeding before a model is built, and running the export on the main process only."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import torch
from accelerate import PartialState
from torch.utils.data import DataLoader

from samu_st.atomic import atomic_folder
from samu_st.data.dataset import SpeechDataset
from samu_st.data.sampler import DurationBatchSampler
from samu_st.steps.data import DataConfig, build_sampler, load_dataset, resolve_batching
from samu_st.training import TrainConfig, process_rank_and_count

T = TypeVar("T")
log = logging.getLogger(__name__)
# Written into a folder made by made_once_on_main after its maker returned.
MADE_MARK = ".complete"


def batched(cfg: DataConfig, train: TrainConfig) -> tuple[DataConfig, TrainConfig]:
    """``cfg`` and ``train`` with the micro-batch size and accumulation that
    ``data.update_duration`` implies on this job's processes (unchanged when it is unset)."""
    _, world = process_rank_and_count(train)
    plan = resolve_batching(cfg, train.grad_accum, world)
    if cfg.update_duration > 0:
        log.info(
            "batches: %.0f s of speech per update = %d process(es) × %d micro-batch(es) of "
            "<= %.1f s", cfg.update_duration, world, plan.grad_accum, plan.micro_duration,
        )  # fmt: skip
    return (
        replace(cfg, max_duration=plan.micro_duration),
        replace(train, grad_accum=plan.grad_accum),
    )


def train_data(
    cfg: DataConfig, train: TrainConfig
) -> tuple[SpeechDataset, DurationBatchSampler, TrainConfig]:
    """The training dataset, THIS process's batch sampler (its rank's share) and the train
    config with the accumulation of ``data.update_duration`` (see :func:`batched`)."""
    cfg, train = batched(cfg, train)
    dataset = load_dataset(cfg, train=True)
    rank, world = process_rank_and_count(train)
    return dataset, build_sampler(cfg, dataset, rank=rank, world_size=world), train


def dev_dataset(cfg: DataConfig | None) -> SpeechDataset | None:
    """The dev dataset (``cfg.split`` of folders: set ``split: dev``), without perturbation."""
    return None if cfg is None else load_dataset(cfg, train=False)


def eval_loader(
    cfg: DataConfig, dataset: SpeechDataset, collate_fn: Callable[[list[Any]], Any]
) -> DataLoader[Any]:
    """A loader over ``dataset`` in length order, batches bounded by ``cfg.max_duration``."""
    sampler = build_sampler(cfg, dataset, shuffle=False)
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_fn)


def seed_model_init(train: TrainConfig) -> None:
    """Seed torch before building a model: frozen random weights (a conv front end built from
    a preset) are not in checkpoints, so a resumed run must draw the very same ones."""
    torch.manual_seed(train.seed)


def on_main(fn: Callable[[], T]) -> T | None:
    """Run ``fn`` on the main process (others get None), then wait for everyone."""
    state = PartialState()
    result = fn() if state.is_main_process else None
    state.wait_for_everyone()
    return result


def made_once_on_main(
    folder: Path, make: Callable[[Path], None], reuse: bool = True, *, point: str
) -> Path:
    """``folder`` as every process will read it: the main process alone decides whether to
    (re)make it (``reuse`` and already there: keep it) and runs ``make(tmp)``, which fills a
    temporary folder that then replaces ``folder`` (:func:`samu_st.atomic.atomic_folder`, write
    point ``point``); then all wait.

    The decision must be the main process's: a rank testing ``folder`` itself can see the main
    process's fresh save, skip the barrier in :func:`on_main` and hang the job. A folder counts
    as made only with its completion mark (in it before the rename): a folder without one (left
    by an older version killed mid-save) is made again, never loaded."""

    def once() -> None:
        if reuse and (folder / MADE_MARK).is_file():
            return
        with atomic_folder(folder, point=point) as tmp:
            make(tmp)
            (tmp / MADE_MARK).write_text("complete\n", encoding="utf-8")

    on_main(once)
    return folder


def final_dir(out_dir: str | Path) -> Path:
    """Where a step exports the model the next step loads: ``<out_dir>/final``."""
    return Path(out_dir) / "final"
