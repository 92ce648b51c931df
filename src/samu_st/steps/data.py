"""Speech data for a training step: manifests → dataset → duration-bucketed batches.

Every step (SSL, distillation, ST, CTC) reads its audio the same way; only the collator that
adds targets differs, so this module is shared and the steps pass their collate function.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from samu_st.data.dataset import SpeechDataset
from samu_st.data.manifest import SPLITS, read_manifest, resolve_audio
from samu_st.data.sampler import DurationBatchSampler, language_temperature_weights
from samu_st.errors import ConfigError, DataError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DataConfig:
    """Which manifests a step reads and how its batches are formed."""

    manifests: tuple[str, ...] = ()  # .jsonl files, or folders holding <split>/<lang>.jsonl
    split: str = "train"  # split subfolder used when a folder is given
    languages: tuple[str, ...] = ()  # keep only these source languages; empty = all
    # Seconds of padded speech in one micro-batch of ONE process (what fits in its memory).
    max_duration: float = 60.0
    # Seconds of speech per optimizer update summed over ALL processes (the paper's "batches
    # of 10 minutes": 600). Each of W processes takes update_duration / W per update, split into
    # gradient-accumulation micro-batches of at most max_duration (train.grad_accum must then
    # stay 1). 0: unset, each process takes max_duration × train.grad_accum per update, so the
    # update grows with the number of processes.
    update_duration: float = 0.0
    max_batch_size: int = 0  # utterances per batch; 0 = no limit
    max_utterance_seconds: float = 30.0  # longer clips are dropped (and counted) before training
    speed_factors: tuple[float, ...] = (1.0,)  # speed perturbation (paper step 2: 0.9 1.0 1.1)
    language_temperature: float = 0.0  # >0: sample languages with p ∝ share^(1/T); 0 = natural
    cache_mb: int = 0  # in-memory cache of decoded audio (MB); pays off on small corpora
    # In-memory cache of the FROZEN conv front end's outputs per clip (MB; 0 = none), used in
    # training by train-st and distill (samu_st.models.front_end_cache): each epoch after the
    # first skips the conv stack. Ignored where the front end trains or uses GroupNorm.
    front_end_cache_mb: int = 0
    seed: int = 1  # shuffling and perturbation seed

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ConfigError(f"data.split: must be one of {list(SPLITS)}, got {self.split!r}")
        if self.max_duration <= 0:
            raise ConfigError("data.max_duration: must be > 0")
        if self.update_duration < 0:
            raise ConfigError("data.update_duration: must be >= 0 (0 = unset)")
        if self.language_temperature < 0:
            raise ConfigError("data.language_temperature: must be >= 0")


def manifest_files(cfg: DataConfig, split: str | None = None) -> list[Path]:
    """The manifest files named by ``cfg`` (folders expand to ``<folder>/<split>/*.jsonl``)."""
    split = split or cfg.split
    files: list[Path] = []
    for entry in cfg.manifests:
        path = Path(entry)
        if path.is_dir():
            sub = path / split
            found = sorted(sub.glob("*.jsonl")) if sub.is_dir() else sorted(path.glob("*.jsonl"))
            if not found:
                raise DataError(path, f"no .jsonl manifests in {sub} or {path}")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise DataError(path, "manifest file or folder not found")
    if cfg.languages:
        files = [f for f in files if f.stem in cfg.languages or f.parent.name == "unlabeled"]
    if not files:
        raise ConfigError("data.manifests: no manifest selected (check manifests and languages)")
    return files


def load_dataset(cfg: DataConfig, split: str | None = None, *, train: bool = True) -> SpeechDataset:
    """A :class:`SpeechDataset` over the selected manifests.

    Clips longer than ``max_utterance_seconds`` are dropped and counted in the log; speed
    perturbation applies only to training data.
    """
    utts = [
        replace(u, audio=str(resolve_audio(u, path)))
        for path in manifest_files(cfg, split)
        for u in read_manifest(path)
    ]
    keep = [
        u
        for u in utts
        if u.duration <= cfg.max_utterance_seconds
        and (not cfg.languages or u.language in cfg.languages)
    ]
    if len(keep) < len(utts):
        log.info(
            "dropped %d of %d utterances (too long or other language)",
            len(utts) - len(keep),
            len(utts),
        )
    if not keep:
        raise ConfigError("data: no utterance left after filtering")
    return SpeechDataset(
        keep,
        None,
        speed_factors=cfg.speed_factors if train else (1.0,),
        cache_bytes=cfg.cache_mb * 2**20,
        seed=cfg.seed,
    )


def build_sampler(
    cfg: DataConfig,
    dataset: SpeechDataset,
    *,
    rank: int = 0,
    world_size: int = 1,
    shuffle: bool = True,
) -> DurationBatchSampler:
    """Duration-bucketed batches of this process's share; language sampling if configured."""
    weights: np.ndarray | None = None
    if shuffle and cfg.language_temperature > 0:
        weights = language_temperature_weights(dataset.languages, cfg.language_temperature)
    return DurationBatchSampler(
        dataset.durations,
        cfg.max_duration,
        max_batch_size=cfg.max_batch_size or None,
        shuffle=shuffle,
        seed=cfg.seed,
        speed_factors=dataset.speed_factors if shuffle else (1.0,),
        weights=weights,
        rank=rank,
        world_size=world_size,
        drop_last=shuffle,
    )


@dataclass(frozen=True)
class Batching:
    """How one optimizer update is formed on ``world`` processes."""

    micro_duration: float  # padded seconds per micro-batch on one process
    grad_accum: int  # micro-batches per update on each process
    world: int  # processes

    @property
    def update_duration(self) -> float:
        """Padded seconds of speech per update over all processes (an upper bound)."""
        return self.micro_duration * self.grad_accum * self.world


def resolve_batching(cfg: DataConfig, grad_accum: int, world: int) -> Batching:
    """The micro-batch size and accumulation that give ``cfg.update_duration`` seconds per
    update on ``world`` processes (or, unset, ``max_duration`` × ``grad_accum`` per process)."""
    if cfg.update_duration <= 0:
        return Batching(cfg.max_duration, grad_accum, world)
    if grad_accum != 1:
        raise ConfigError(
            "data.update_duration sets the accumulation itself: leave train.grad_accum at 1 "
            f"(got {grad_accum}), or unset update_duration"
        )
    per_process = cfg.update_duration / world
    accum = max(1, math.ceil(per_process / cfg.max_duration - 1e-9))
    return Batching(per_process / accum, accum, world)
