"""`samu-st pipeline` under torchrun with two CPU processes (gloo), as `accelerate launch` runs
it on a GPU node: training stages run data-parallel on both processes, the corpus, evaluation
and report stages on the main process only, and a second launch reuses every stage."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from test_ddp import torchrun
from test_pipeline import tiny_steps, write_tiny_grid

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")

SYSTEMS = ["xlsr-A", "samu-xlsr-A", "cascade"]


def launch(config: Path) -> str:
    cmd = [*torchrun(), "-m", "samu_st", "pipeline", str(config)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    return proc.stdout


def test_pipeline_on_two_processes(tmp_path: Path) -> None:
    steps = tiny_steps()
    for section in ("pretrain_text", "train_mt"):  # ~10 texts: several batches for 2 ranks
        steps[section]["max_batch_size"] = 2
    write_tiny_grid(tmp_path, SYSTEMS, ["table4"], steps, seed=2, train=8)

    out = launch(tmp_path / "grid.yaml")
    # one progress line per stage (the main process speaks), every stage finished
    finished = [line for line in out.splitlines() if ": finished in " in line]
    assert len(finished) == 12 and out.count("[1/12] corpus: corpus") == 1, out
    report = json.loads((tmp_path / "out" / "report" / "report.json").read_text())
    assert [m["model"] for m in report["models"]] == SYSTEMS
    # the training stages really ran on two processes: one RNG state file per rank
    for folder in ("pretrain", "distill", "ctc", "pretrain_text", "mt", "st/xlsr-A"):
        checkpoints = sorted((tmp_path / "out" / folder / "checkpoints").iterdir())
        files = {p.name for p in checkpoints[-1].iterdir()}
        assert {"rank-0.pt", "rank-1.pt"} <= files, (folder, files)
    assert not list((tmp_path / "out").rglob("*.replaced-*"))

    again = launch(tmp_path / "grid.yaml")
    assert again.count("done earlier") == 12, again
