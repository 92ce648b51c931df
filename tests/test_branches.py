"""``samu-st demo --jobs 2``: systems side by side give exactly the sequential result."""

from __future__ import annotations

from pathlib import Path

import pytest

from samu_st.branches import shared_stages
from samu_st.cli import main
from samu_st.pipeline import load_pipeline_config
from samu_st.pipeline_stages import build_stages
from test_pipeline import write_tiny_grid

pytestmark = pytest.mark.usefixtures("one_thread_module")


def test_shared_stages_are_those_two_systems_need(tmp_path: Path) -> None:
    grid = write_tiny_grid(tmp_path, ["xlsr-A", "samu-xlsr-A"], ["table6"])
    stages = build_stages(load_pipeline_config(grid))
    shared = shared_stages(stages, ["xlsr-A", "samu-xlsr-A"])
    assert shared == ["corpus", "pretrain", "pretrain_text"]  # distill: samu-xlsr-A's own
    assert shared_stages(stages, ["xlsr-A"]) == [s.name for s in stages]


def test_parallel_branches_equal_sequential_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    grid = write_tiny_grid(tmp_path, ["xlsr-A", "samu-xlsr-A"], ["table6"])
    for jobs in ("1", "2"):
        out = tmp_path / f"jobs{jobs}"
        assert main(["demo", "--config", str(grid), "--out", str(out), "--jobs", jobs]) == 0
    printed = capsys.readouterr().out
    assert "[xlsr-A] [" in printed and "[samu-xlsr-A] [" in printed  # the branches' progress
    for system in ("xlsr-A", "samu-xlsr-A"):
        one = (tmp_path / "jobs1" / "eval" / system / "hypotheses.jsonl").read_text()
        two = (tmp_path / "jobs2" / "eval" / system / "hypotheses.jsonl").read_text()
        assert one == two, system
        assert (tmp_path / "jobs2" / "logs" / f"{system}.log").is_file()
    assert (tmp_path / "jobs1" / "results.md").read_text() == (
        tmp_path / "jobs2" / "results.md"
    ).read_text()
