"""Long-run health of the training loop: no memory growth over 500 steps, and DataLoader workers
that die or fail are reported at once instead of hanging the run."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import multiprocessing
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from samu_st.errors import AudioError, SamuError
from samu_st.training import LossOutput, train
from toy_train import ToyDataset, ToyModel, ToySampler, ToyTask, collate, toy_config

PAGE = os.sysconf("SC_PAGE_SIZE")
STEPS, WARM_UP = 500, 50
# Growth allowed between update 50 and update 500 (after gc.collect()). Measured on this
# machine: 0.00-0.05 MiB for the loop as it is, while keeping one toy step's autograd graph
# alive per update (the classic `losses.append(loss)` leak) grows RSS by ~2.8 MiB over the same
# 450 updates (~6 KiB each; test_the_measure_sees_a_small_leak). 1 MiB lies between the two, so
# any leak of one small graph, batch or log record per update fails.
MAX_GROWTH_MIB = 2.0  # a steady 16 KiB/update leak adds 4 MiB over 250 updates


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread, and a loaded machine does not oversubscribe."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def rss_bytes() -> int:
    """Resident set size of this process (``/proc/self/statm``, field 2, in pages), after
    collecting garbage and handing free heap pages back to the OS (glibc ``malloc_trim``):
    otherwise memory freed by earlier tests in the same process absorbs a leak unseen."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * PAGE


class RssTask(ToyTask):
    """The toy task, sampling RSS before some updates; ``leak`` keeps every loss (and graph)."""

    def __init__(self, leak: bool = False) -> None:
        super().__init__()
        self.leak = leak
        self.kept: list[torch.Tensor] = []
        self.rss: dict[int, int] = {}

    def on_step(self, step: int) -> None:
        if step in (WARM_UP, STEPS // 2, STEPS - 1):
            self.rss[step] = rss_bytes()

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> LossOutput:
        out = super().loss(model, batch)
        if self.leak:  # the loss with its graph, plus 16 KiB: a small but steady leak
            self.kept += [out.loss, torch.ones(4096)]
        return out


def growth_mib(tmp_path: Path, leak: bool) -> tuple[float, float]:
    """(RSS growth over the second half of a 500-update toy run in MiB, seconds).

    The first half is left out: the allocator and caches settle there, and how much depends on
    the library versions; a leak grows in every half."""
    torch.manual_seed(0)
    model = ToyModel(hidden=128)
    data = ToyDataset(n=512)
    task = RssTask(leak)
    cfg = toy_config(STEPS, log_every=50, save_every=10_000)
    start = time.perf_counter()
    result = train(task, model, data, collate, ToySampler(len(data), 32, seed=5), cfg, tmp_path)
    assert result.step == STEPS
    return (task.rss[STEPS - 1] - task.rss[STEPS // 2]) / 2**20, time.perf_counter() - start


def growth_in_fresh_process(tmp_path: Path, leak: bool) -> tuple[float, float]:
    """:func:`growth_mib` in a spawned interpreter: what earlier tests left in this process
    (threads, caches, freed-but-kept heap) must not be measured as this loop's growth."""
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply(growth_mib, (tmp_path, leak))


def test_no_memory_growth_over_500_steps(tmp_path: Path) -> None:
    growth, _ = growth_in_fresh_process(tmp_path, leak=False)
    assert growth < MAX_GROWTH_MIB, f"RSS grew {growth:.2f} MiB over {STEPS - WARM_UP} updates"


def test_the_measure_sees_a_small_leak(tmp_path: Path) -> None:
    """The same run keeping each update's loss tensor (and graph) grows past the limit."""
    growth, _ = growth_in_fresh_process(tmp_path, leak=True)
    assert growth > MAX_GROWTH_MIB


# --- DataLoader workers --------------------------------------------------------------------------


@contextmanager
def deadline(seconds: int) -> Iterator[None]:
    """Raise TimeoutError in the main thread if the block runs longer (a hang fails, not waits)."""

    def expire(signum: int, frame: Any) -> None:
        raise TimeoutError(f"still running after {seconds} s: the loop hangs")

    old = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


class FailingDataset(ToyDataset):
    """Fails in a DataLoader worker after ``after`` items in all (epochs get new workers, so the
    count is shared): ``exit`` (os._exit), ``kill`` (SIGKILL, as the OOM killer does) or
    ``raise`` (an AudioError for a bad clip)."""

    def __init__(self, how: str, after: int = 60) -> None:
        super().__init__()
        self.how, self.after = how, after
        self.served = multiprocessing.Value("i", 0)  # inherited by the forked workers

    def __getitem__(self, i: int) -> dict[str, Any]:
        if torch.utils.data.get_worker_info() is not None:
            with self.served.get_lock():
                self.served.value += 1
                failing = self.served.value > self.after
            if failing and self.how == "exit":
                os._exit(3)
            if failing and self.how == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            if failing and self.how == "raise":
                raise AudioError("/data/clips/bad.wav", "audio contains NaN or infinite samples")
        return super().__getitem__(i)


# torch's own report ("pid N" or "pid(s) N"), raised in the main process within seconds
WORKER_DIED = r"DataLoader worker \(pid(\(s\))? [\d, ]+\) (exited unexpectedly|is killed by signal)"


def _train(data: ToyDataset, out: Path, resume: bool = False) -> Any:
    cfg = toy_config(30, num_workers=1, save_every=2)
    return train(ToyTask(), ToyModel(), data, collate, ToySampler(44, 8, seed=5), cfg, out, resume)


@pytest.mark.parametrize("how", ["exit", "kill"])
def test_dead_worker_is_reported_not_hung_on(how: str, tmp_path: Path) -> None:
    start = time.monotonic()
    with (
        deadline(60),
        pytest.raises(RuntimeError, match=WORKER_DIED),
    ):
        _train(FailingDataset(how), tmp_path)
    assert time.monotonic() - start < 30
    # the run stopped cleanly: its lock is released and it resumes from its last checkpoint
    with deadline(60):
        result = _train(ToyDataset(), tmp_path, resume=True)
    # 5 batches an epoch: item 61 is in epoch 1, whose loader starts after update 5
    assert result.resumed_from is not None and result.resumed_from >= 4 and result.step == 30


# Unreadable clips are skipped and counted (samu_st.training.bad_clips); here every clip after
# the 60th is bad, so the run stops, cleanly, once train.max_bad_clips (100) is passed.
OVER_LIMIT = r"unreadable clips, over train\.max_bad_clips=100 \(first: /data/clips/bad\.wav: audio"


def test_bad_clip_in_a_worker_is_a_clean_error(tmp_path: Path) -> None:
    with deadline(60), pytest.raises(SamuError, match=OVER_LIMIT):
        _train(FailingDataset("raise"), tmp_path)


def test_bad_clip_without_workers_is_a_clean_error(tmp_path: Path) -> None:
    class Bad(ToyDataset):
        def __getitem__(self, i: int) -> dict[str, Any]:
            raise AudioError("/data/clips/bad.wav", "audio contains NaN or infinite samples")

    cfg = toy_config(5, num_workers=0)
    with pytest.raises(SamuError, match=OVER_LIMIT):
        train(ToyTask(), ToyModel(), Bad(), collate, ToySampler(44, 8), cfg, tmp_path)
