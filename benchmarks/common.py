"""What every benchmark shares: the machine block, peak memory, step timing, the JSON record.

Every ratio in a record is oriented so that a value above 1 means samu-st does better
(throughput ours/reference, time and memory reference/ours, padding reference/ours).
"""

from __future__ import annotations

import datetime
import math
import os
import platform
import resource
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import torch

from samu_st.release import cpu_model

__all__ = ["cpu_model"]

MB = 2**20
BF16_FLAGS = {"amx_bf16", "amx_tile", "avx512_bf16", "avx512_fp16"}  # what makes bf16 fast


def cpu_flags() -> set[str]:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    return set()


def device() -> torch.device:
    """Where the benchmarks run: the first GPU if there is one, else the CPU."""
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def device_name() -> str:
    if torch.cuda.is_available():
        return f"cuda: {torch.cuda.get_device_name(0)}"
    return "cpu"


def machine_info() -> dict[str, Any]:
    """Cores, CPU model, library versions, device, threads and the load average now."""
    import transformers

    return {
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": cpu_model(),
        "cpu_bf16_flags": sorted(cpu_flags() & BF16_FLAGS),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "device": device_name(),
        "torch_threads": torch.get_num_threads(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }


def rss_bytes() -> int:
    """Resident set size of this process now (Linux ``/proc/self/statm``; 0 elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


def process_peak_rss_mb() -> float:
    """Peak RSS of this process since it started (``ru_maxrss``, KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class PeakMemory:
    """Peak memory inside a ``with`` block: RSS sampled by a thread every ``interval`` s, and
    ``torch.cuda.max_memory_allocated`` on a GPU. RSS is only meaningful in a fresh process
    (freed memory may stay mapped), which is why the training benchmarks run each side in one.
    """

    def __init__(self, interval: float = 0.002) -> None:
        self.interval = interval
        self.before = 0
        self.peak = 0
        self.cuda_peak: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(self.interval)

    def __enter__(self) -> PeakMemory:
        self.before = self.peak = rss_bytes()
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak = max(self.peak, rss_bytes())
        if torch.cuda.is_available():
            self.cuda_peak = int(torch.cuda.max_memory_allocated())

    def summary(self) -> dict[str, float | None]:
        return {
            "rss_before_mb": round(self.before / MB, 1),
            "peak_rss_mb": round(self.peak / MB, 1),
            "peak_rss_growth_mb": round((self.peak - self.before) / MB, 1),
            "cuda_max_allocated_mb": None
            if self.cuda_peak is None
            else round(self.cuda_peak / MB, 1),
        }


class AutocastProbe:
    """Records whether ``module``'s forward ever ran under bf16 autocast (checks that a
    reference's ``bf16=True`` really took effect; accelerate wraps the top model's own
    ``forward``, so probe a submodule)."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.seen = False
        module.register_forward_pre_hook(self._hook)

    def _hook(self, module: torch.nn.Module, args: Any) -> None:
        kind = device().type
        if torch.is_autocast_enabled(kind) and torch.get_autocast_dtype(kind) == torch.bfloat16:
            self.seen = True


def best_of_rounds(rounds: list[list[dict[str, Any]]], key: str) -> list[dict[str, Any]]:
    """Per side, the round with the highest ``key`` (sides run in turn in every round, so a
    load change on a shared machine hits all of them), with every round's ``key`` listed."""
    best = []
    for results in zip(*rounds, strict=True):
        top = dict(max(results, key=lambda r: float(r[key])))
        top[f"all_rounds_{key}"] = [r[key] for r in results]
        best.append(top)
    return best


def ratio(ours: float | None, reference: float | None, higher_is_better: bool) -> float | None:
    """ours/reference when higher is better, reference/ours when lower is better; None when a
    side is missing or the quotient is not a finite positive number."""
    if ours is None or reference is None:
        return None
    num, den = (ours, reference) if higher_is_better else (reference, ours)
    if den <= 0 or num <= 0:
        return None
    value = num / den
    return round(value, 3) if math.isfinite(value) else None


def fresh_accelerate_state() -> None:
    """Forget accelerate's process-wide precision/accumulation singletons, so that the next
    ``Accelerator`` (ours or the HF Trainer's) may choose its own settings in this process."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state()
    GradientState._reset_state()


@dataclass
class Record:
    """One benchmark's JSON object (one line of output)."""

    benchmark: str
    quick: bool
    setup: dict[str, Any] = field(default_factory=dict)
    ours: dict[str, Any] = field(default_factory=dict)
    reference: dict[str, Any] = field(default_factory=dict)
    # More sides, each a top-level key of the JSON (e.g. ``reference_notebook``: the earlier,
    # not same-work reference "as the notebook does it")
    extra: dict[str, dict[str, Any]] = field(default_factory=dict)
    ratios: dict[str, float | None] = field(default_factory=dict)
    headline: str = ""  # the key of `ratios` the benchmark is about
    target: dict[str, Any] | None = None  # the goal and whether it is met
    notes: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.time)
    machine: dict[str, Any] = field(default_factory=machine_info)

    def to_json(self) -> dict[str, Any]:
        machine = dict(self.machine)
        machine["loadavg_start"] = machine.pop("loadavg")
        machine["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
        date = datetime.datetime.fromtimestamp(self.started, datetime.timezone.utc)
        return {
            "benchmark": self.benchmark,
            "date": date.isoformat(timespec="seconds"),
            "quick": self.quick,
            "machine": machine,
            "setup": self.setup,
            "ours": self.ours,
            "reference": self.reference,
            **self.extra,
            "ratios": self.ratios,
            "ratio": self.ratios.get(self.headline),
            "headline": self.headline,
            "ratio_meaning": "above 1 = samu-st better (faster, leaner, less padding)",
            "target": self.target,
            "notes": self.notes,
            "wall_seconds": round(time.time() - self.started, 1),
        }
