"""`samu-st --help` lists the commands in workflow order (they were in module discovery order:
train-ctc first, demo in the middle)."""

from __future__ import annotations

import re

import pytest

from samu_st.cli import WORKFLOW, main


def test_help_lists_commands_in_workflow_order(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    listed = re.findall(r"^    ([a-z][a-z-]*)", capsys.readouterr().out, flags=re.M)
    assert listed[:3] == ["demo", "pipeline", "prepare"]
    known = [c for c in listed if c in WORKFLOW]
    assert known == sorted(known, key=WORKFLOW.index) and len(known) >= 14
    assert "prepare-irish" not in listed  # it is `samu-st prepare irish` now


def test_prepare_irish_is_under_prepare(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["prepare", "--help"])
    assert "irish" in capsys.readouterr().out
