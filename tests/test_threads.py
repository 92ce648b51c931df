"""Threads handed on between parallel branches (samu_st.threads, samu_st.branches._wait)."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from samu_st.branches import _wait
from samu_st.threads import ThreadBudget, share_cores, write_threads


def test_share_cores() -> None:
    assert share_cores(2, 1) == [2]
    assert share_cores(2, 2) == [1, 1]
    assert share_cores(5, 2) == [3, 2]
    assert share_cores(1, 3) == [1, 1, 1]  # never below one thread
    assert share_cores(4, 0) == []


def test_budget_follows_its_file(tmp_path: Path) -> None:
    before = torch.get_num_threads()
    path = tmp_path / "b.threads"
    budget = ThreadBudget(path, interval=0.0)
    assert budget.poll() is None  # no file yet
    try:
        torch.set_num_threads(1)
        write_threads(path, 2)
        assert budget.poll() == 2 and torch.get_num_threads() == 2
        assert budget.poll() is None  # unchanged file: one stat, nothing else
        path.write_text("not a number\n")
        assert budget.poll() is None and torch.get_num_threads() == 2
        assert ThreadBudget(None).poll() is None
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ValueError):
        write_threads(path, 0)


def _branch(seconds: float, code: int = 0) -> subprocess.Popen[str]:
    script = f"import time, sys; time.sleep({seconds}); sys.exit({code})"
    return subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)


def _running(tmp_path: Path, procs: dict[str, subprocess.Popen[str]]) -> dict[str, tuple]:
    out = {}
    for name, proc in procs.items():
        relay = threading.Thread(target=proc.communicate)
        relay.start()
        out[name] = (proc, relay, tmp_path / f"{name}.log")
    return out


def test_a_finished_branch_hands_its_threads_on(tmp_path: Path) -> None:
    running = _running(tmp_path, {"short": _branch(0.1), "long": _branch(1.5)})
    assert _wait(running, tmp_path, budget=2) == []
    assert (tmp_path / "long.threads").read_text() == "2\n"
    assert not (tmp_path / "short.threads").exists()
    # a parent of one thread (the tests, a sequential run's budget) hands nothing on
    running = _running(tmp_path, {"a": _branch(0.1), "b": _branch(0.5)})
    assert _wait(running, tmp_path, budget=1) == []
    assert not (tmp_path / "b.threads").exists()


def test_a_failed_branch_is_reported(tmp_path: Path) -> None:
    running = _running(tmp_path, {"bad": _branch(0.1, code=3), "good": _branch(0.3)})
    failed = _wait(running, tmp_path, budget=2)
    assert len(failed) == 1 and failed[0].startswith("bad (exit 3")
