"""Off a terminal the progress bar is invisible, so training logs a line at every tenth of the
run (a piped `make demo` printed nothing for the 7 minutes of distillation, issue 17)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from samu_st.training.tracking import RunLogger


def test_progress_lines_off_a_terminal(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="samu_st.training.tracking")
    run = RunLogger(tmp_path, True, False, True, 100, 0)
    for step in range(1, 101):
        run.log({"kind": "train", "step": step, "loss": 1.0 / step})
    run.close()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("update ")]
    assert len(lines) == 10 and lines[0].startswith("update 10/100")
    (tmp_path / "q").mkdir()
    quiet = RunLogger(tmp_path / "q", True, False, False, 100, 0)  # progress off: silent
    caplog.clear()
    quiet.log({"kind": "train", "step": 50, "loss": 0.5})
    assert not [r for r in caplog.records if r.getMessage().startswith("update ")]
