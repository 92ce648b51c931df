"""Independent systems of a pipeline side by side on one machine (``samu-st demo --jobs N``).

The systems of a grid share some stages (the corpus; for several SAMU systems the distilled
encoder) and own the rest (their step 3 and evaluation). On a CPU of a few cores, small models
use one core far better than two, so running the systems' own chains in parallel processes of
one thread each beats running them one after the other with every core: the stages every
system needs run first, then each system's remaining chain in its own ``samu-st pipeline
--only eval:<system>`` process, then the full stage list once more (all done earlier but the
report). Stage markers make this the sequential result: each stage still runs once, in one
process, with its own seed. When a branch ends, the threads of this process (what a sequential
run uses) are shared among the branches still running (:mod:`samu_st.threads`); their training
loops take them up between updates. A thread count changes only the float summation order of
some kernels: with one thread in this process (the tests) nothing changes hands and the result
is exactly the sequential one.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from samu_st.errors import SamuError
from samu_st.pipeline import Context, Stage, execute, select
from samu_st.threads import THREADS_FILE_ENV, share_cores, write_threads


def shared_stages(stages: list[Stage], systems: Sequence[str]) -> list[str]:
    """Names of the stages that more than one system's evaluation needs (all, for one)."""
    needed = [{s.name for s in select(stages, [f"eval:{name}"])} for name in systems]
    return [s.name for s in stages if sum(s.name in n for n in needed) > 1 or len(needed) < 2]


def _relay(proc: subprocess.Popen[str], prefix: str, say: Callable[[str], None], log: Path) -> None:
    """Copy the child's output to its log, and its progress lines (``[i/n] ...``) to ``say``."""
    assert proc.stdout is not None
    with open(log, "w", encoding="utf-8") as f:
        for line in proc.stdout:
            f.write(line)
            if line.startswith("["):
                say(f"{prefix} {line.rstrip()}")


def _wait(
    running: dict[str, tuple[subprocess.Popen[str], threading.Thread, Path]],
    logs: Path,
    budget: int,
) -> list[str]:
    """Wait for every branch; each time one ends, share ``budget`` threads (this process's
    torch threads, what a sequential run uses) among those still running
    (:mod:`samu_st.threads`). The failed ones, described."""
    failed: list[str] = []
    left = dict(running)
    while left:
        ended = [name for name, (proc, _, _) in left.items() if proc.poll() is not None]
        if not ended:
            time.sleep(0.2)
            continue
        for name in ended:
            proc, relay, log = left.pop(name)
            if proc.returncode != 0:
                failed.append(f"{name} (exit {proc.returncode}; see {log})")
            relay.join()
        if left and not failed:
            for name, threads in zip(left, share_cores(budget, len(left)), strict=True):
                if threads > 1:
                    write_threads(logs / f"{name}.threads", threads)
    return failed


def run_branches(
    stages: list[Stage],
    ctx: Context,
    systems: Sequence[str],
    command: Sequence[str],
    say: Callable[[str], None] = print,
) -> dict[str, Path]:
    """Shared stages here, then ``command + ["--only", "eval:<system>"]`` per system in
    parallel (one torch thread each), then every stage (the report) here; the outputs.

    ``command`` is the ``samu-st pipeline`` invocation (config and overrides) that builds the
    same stages as ``stages``. A failed branch raises :class:`SamuError` naming its log.
    """
    execute(select(stages, shared_stages(stages, systems)), ctx, say)
    if len(systems) > 1:
        logs = ctx.root / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        running: dict[str, tuple[subprocess.Popen[str], threading.Thread, Path]] = {}
        for name in systems:
            log = logs / f"{name}.log"
            threads_file = logs / f"{name}.threads"
            threads_file.unlink(missing_ok=True)  # a rerun starts at one thread again
            proc = subprocess.Popen(
                [sys.executable, "-m", "samu_st", *command, "--only", f"eval:{name}"],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                env={**env, THREADS_FILE_ENV: str(threads_file)},
            )  # fmt: skip
            relay = threading.Thread(target=_relay, args=(proc, f"[{name}]", say, log))
            relay.start()
            running[name] = (proc, relay, log)
        failed = _wait(running, logs, torch.get_num_threads())
        if failed:
            raise SamuError("pipeline branches failed: " + ", ".join(failed))
    return execute(stages, ctx, say)
