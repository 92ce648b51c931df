"""Run one side of a benchmark in a fresh Python process, for a clean peak-memory figure.

``python -m benchmarks.side MODULE:FUNCTION JSON_KWARGS`` calls
``benchmarks.MODULE.FUNCTION(**kwargs)`` and prints its result (a JSON object, plus the
process's peak RSS) on a last line starting with :data:`PREFIX`.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.common import best_of_rounds, process_peak_rss_mb

PREFIX = "BENCH-SIDE-RESULT "
THREADS_ENV = "SAMU_BENCH_THREADS"
ROOT = Path(__file__).resolve().parents[1]  # the folder holding the benchmarks package


def resolve(target: str) -> Callable[..., dict[str, Any]]:
    module, _, name = target.partition(":")
    fn: Callable[..., dict[str, Any]] = getattr(
        importlib.import_module(f"benchmarks.{module}"), name
    )
    return fn


def run_side(target: str, kwargs: dict[str, Any], isolate: bool) -> dict[str, Any]:
    """``benchmarks.<module>.<function>(**kwargs)``, in a child process if ``isolate``."""
    if not isolate:
        return resolve(target)(**kwargs)
    import torch

    env = dict(os.environ)
    env[THREADS_ENV] = str(torch.get_num_threads())
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    cmd = [sys.executable, "-m", "benchmarks.side", target, json.dumps(kwargs)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(PREFIX)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(
            f"{target} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}{proc.stdout[-1000:]}"
        )
    result: dict[str, Any] = json.loads(lines[-1][len(PREFIX) :])
    return result


def main(argv: list[str]) -> int:
    import torch

    threads = os.environ.get(THREADS_ENV)
    if threads:
        torch.set_num_threads(int(threads))
    target, kwargs = argv[0], json.loads(argv[1])
    result = resolve(target)(**kwargs)
    result["process_peak_rss_mb"] = round(process_peak_rss_mb(), 1)
    print(PREFIX + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))


def interleaved_sides(
    sides: list[tuple[str, dict[str, Any]]],
    work: Path,
    isolate: bool,
    rounds: int,
    key: str = "audio_sec_per_sec",
) -> list[dict[str, Any]]:
    """Run ``sides`` (``(target, kwargs)``, each given a fresh ``out_dir``) in turn, ``rounds``
    times when isolated (once otherwise), so a load change on a shared machine hits every
    side; per side, its best round by ``key`` (every round's value listed)."""
    import tempfile

    runs = work / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    results = []
    for _ in range(rounds if isolate else 1):
        with tempfile.TemporaryDirectory(dir=runs) as tmp:
            results.append([
                run_side(target, {**kwargs, "out_dir": f"{tmp}/side{i}"}, isolate)
                for i, (target, kwargs) in enumerate(sides)
            ])  # fmt: skip
    return best_of_rounds(results, key)
