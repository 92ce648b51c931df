"""Independent systems of a pipeline side by side on one machine (``samu-st demo --jobs N``).

The systems of a grid share some stages (the corpus; for several SAMU systems the distilled
encoder) and own the rest (their step 3 and evaluation). On a CPU of a few cores, small models
use one core far better than two, so running the systems' own chains in parallel processes of
one thread each beats running them one after the other with every core: the stages every
system needs run first, then each system's remaining chain in its own ``samu-st pipeline
--only eval:<system>`` process, then the full stage list once more (all done earlier but the
report). Stage markers make this exactly the sequential result: each stage still runs once,
in one process, with its own seed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from samu_st.errors import SamuError
from samu_st.pipeline import Context, Stage, execute, select


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
        running: list[tuple[str, subprocess.Popen[str], threading.Thread, Path]] = []
        for name in systems:
            log = logs / f"{name}.log"
            proc = subprocess.Popen(
                [sys.executable, "-m", "samu_st", *command, "--only", f"eval:{name}"],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
            )  # fmt: skip
            relay = threading.Thread(target=_relay, args=(proc, f"[{name}]", say, log))
            relay.start()
            running.append((name, proc, relay, log))
        failed = []
        for name, proc, relay, log in running:
            if proc.wait() != 0:
                failed.append(f"{name} (exit {proc.returncode}; see {log})")
            relay.join()
        if failed:
            raise SamuError("pipeline branches failed: " + ", ".join(failed))
    return execute(stages, ctx, say)
