"""Glue shared by the speech steps' runners: training data for this process, a dev loader,
seeding before a model is built, and running the export on the main process only."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from accelerate import PartialState
from torch.utils.data import DataLoader

from samu_st.data.dataset import SpeechDataset
from samu_st.data.sampler import DurationBatchSampler
from samu_st.steps.data import DataConfig, build_sampler, load_dataset
from samu_st.training import TrainConfig, process_rank_and_count

T = TypeVar("T")


def train_data(cfg: DataConfig, train: TrainConfig) -> tuple[SpeechDataset, DurationBatchSampler]:
    """The training dataset and THIS process's batch sampler (its rank's share)."""
    dataset = load_dataset(cfg, train=True)
    rank, world = process_rank_and_count(train)
    return dataset, build_sampler(cfg, dataset, rank=rank, world_size=world)


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


def made_once_on_main(folder: Path, make: Callable[[], None], reuse: bool = True) -> Path:
    """``folder`` as every process will read it: the main process alone decides whether to
    (re)make it (``reuse`` and already there: keep it) and runs ``make``; then all wait.

    The decision must be the main process's: a rank testing ``folder`` itself can see the main
    process's fresh save, skip the barrier in :func:`on_main` and hang the job."""

    def once() -> None:
        if not (reuse and folder.is_dir()):
            make()

    on_main(once)
    return folder


def final_dir(out_dir: str | Path) -> Path:
    """Where a step exports the model the next step loads: ``<out_dir>/final``."""
    return Path(out_dir) / "final"
