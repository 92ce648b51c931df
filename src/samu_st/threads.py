"""Torch threads handed on between the parallel branches of ``samu-st demo --jobs N``.

The demo trains its systems side by side, one process of one thread per system
(:mod:`samu_st.branches`). The branches do not take equally long: the SAMU system distils
(step 2) before its step 3, the baseline does not. When a branch ends, its core would idle for
the rest of the run; instead the parent writes each running branch's new thread count into
that branch's threads file (``SAMU_ST_THREADS_FILE``), and the branch's training loop, which
polls the file between updates (:class:`ThreadBudget`, one ``stat`` a second at most), calls
``torch.set_num_threads`` with it. The count changes speed only: every kernel gives the same
result whatever the thread count it runs on is, up to float summation order.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import torch

from samu_st.atomic import write_text_atomic

log = logging.getLogger(__name__)

THREADS_FILE_ENV = "SAMU_ST_THREADS_FILE"


def write_threads(path: Path, threads: int) -> None:
    """Give the branch polling ``path`` ``threads`` torch threads (atomically)."""
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    write_text_atomic(path, f"{threads}\n", point="threads")


def share_cores(cores: int, branches: int) -> list[int]:
    """Threads per running branch: ``cores`` split as evenly as possible, at least 1 each."""
    if branches < 1:
        return []
    base, extra = divmod(max(cores, branches), branches)
    return [base + (1 if i < extra else 0) for i in range(branches)]


class ThreadBudget:
    """Follows a threads file (module docstring); does nothing without one."""

    def __init__(self, path: Path | None, interval: float = 1.0) -> None:
        self.path = path
        self.interval = interval
        self._checked = -float("inf")
        self._seen: float | None = None

    @classmethod
    def from_env(cls) -> ThreadBudget:
        value = os.environ.get(THREADS_FILE_ENV)
        return cls(Path(value) if value else None)

    def poll(self) -> int | None:
        """Apply a changed thread count; the new count, or None when nothing changed."""
        now = time.monotonic()
        if self.path is None or now - self._checked < self.interval:
            return None
        self._checked = now
        try:
            stamp = self.path.stat().st_mtime_ns
            if stamp == self._seen:
                return None
            self._seen = stamp
            threads = int(self.path.read_text(encoding="utf-8").strip())
        except (OSError, ValueError):
            return None  # not written yet, or being replaced: look again later
        if threads < 1 or threads == torch.get_num_threads():
            return None
        torch.set_num_threads(threads)
        log.info("torch threads: %d (a parallel branch finished)", threads)
        return threads
