"""Atomic artefacts (issue 17): every file a step writes goes through :mod:`samu_st.atomic`, and
a run killed at ANY of its write points — chosen by name through ``SAMU_ST_FAULT_AT``, not at
random — then run again ends exactly as an uninterrupted run.

The grid test lists the write points an uninterrupted ``samu-st pipeline`` passes
(``SAMU_ST_FAULT_LOG``), then kills a second run at the first of them, reruns it killed at the
second, and so on through all of them (each rerun resumes what the kills left: one pipeline's
work in all, not one per point), and finally lets it finish.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from samu_st.atomic import (
    FAULT_AT,
    FAULT_LOG,
    atomic_folder,
    atomic_write,
    write_text_atomic,
)
from samu_st.cli import main
from test_crash_safety import ENV, assert_same_state, checkpoint, same_tensors, step_config
from test_pipeline_resume import FINALS, outcome, root  # noqa: F401 (root: the grid fixture)

KILLED = -9  # SIGKILL


def _run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], env={**ENV, **env}, capture_output=True,
                          text=True, timeout=120)  # fmt: skip


# --- the helper ------------------------------------------------------------------------------


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = write_text_atomic(tmp_path / "a.json", "old", point="t")

    def fail(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, fail, point="t")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["a.json"]


def test_atomic_folder_replaces_whole_or_not_at_all(tmp_path: Path) -> None:
    target = tmp_path / "final"
    with atomic_folder(target, point="t") as tmp:
        (tmp / "a").write_text("1")
    with pytest.raises(RuntimeError), atomic_folder(target, point="t") as tmp:
        (tmp / "b").write_text("2")
        raise RuntimeError
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final"]
    assert [p.name for p in target.iterdir()] == ["a"]
    dead = tmp_path / ".final.tmp-999999999"  # left by a killed writer (no such process)
    dead.mkdir()
    with atomic_folder(target, point="t") as tmp:
        (tmp / "c").write_text("3")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final"]
    assert [p.name for p in target.iterdir()] == ["c"]


def test_a_folder_killed_between_its_two_renames_is_put_back(tmp_path: Path) -> None:
    target = tmp_path / "final"
    with atomic_folder(target, point="t") as tmp:
        (tmp / "a").write_text("1")
    code = (
        "from samu_st.atomic import atomic_folder\n"
        f"with atomic_folder({str(target)!r}, point='mine') as tmp:\n"
        "    (tmp / 'b').write_text('2')\n"
    )
    proc = _run_python(code, **{FAULT_AT: "mine@between"})
    assert proc.returncode == KILLED, proc.stderr
    assert not target.exists()  # the old version moved aside, the new one not yet in place
    with atomic_folder(target, point="t") as tmp:  # the rerun first puts the old one back
        assert [p.name for p in target.iterdir()] == ["a"]
        (tmp / "c").write_text("3")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final"]
    assert [p.name for p in target.iterdir()] == ["c"]


def test_a_killed_file_write_leaves_nothing_that_counts(tmp_path: Path) -> None:
    from samu_st.content_id import DigestCache, content_identity

    folder = tmp_path / "manifests"
    path = write_text_atomic(folder / "m.jsonl", "old", point="t")
    before = content_identity(folder, DigestCache(None))
    code = f"from samu_st.atomic import write_text_atomic as w\nw({str(path)!r}, 'new', point='m')"
    assert _run_python(code, **{FAULT_AT: "m"}).returncode == KILLED
    assert len(list(folder.iterdir())) == 2  # the killed writer's temporary file
    assert content_identity(folder, DigestCache(None)) == before  # not part of the folder
    write_text_atomic(path, "newer", point="t")  # the next writer removes it
    assert [p.name for p in folder.iterdir()] == ["m.jsonl"] and path.read_text() == "newer"


@pytest.mark.parametrize("phase", ["before", "after"])
def test_fault_hook_kills_at_the_named_point(tmp_path: Path, phase: str) -> None:
    target, trace = tmp_path / "out.txt", tmp_path / "trace"
    target.write_text("old")
    code = (
        "from samu_st.atomic import write_text_atomic as w\n"
        f"w({str(tmp_path / 'other.txt')!r}, 'x', point='other')\n"
        f"w({str(target)!r}, 'new', point='mine')\n"
        "print('survived')\n"
    )
    at = "mine" if phase == "before" else "mine@after"
    run = _run_python(code, **{FAULT_AT: at, FAULT_LOG: str(trace)})
    assert run.returncode == KILLED and "survived" not in run.stdout, run.stderr
    assert trace.read_text().split() == ["other", "mine"]
    assert target.read_text() == ("old" if phase == "before" else "new")
    assert (tmp_path / "other.txt").read_text() == "x"


# --- the grid, killed at each of its write points ----------------------------------------------

# Write points the grid must pass (a lost one means a write that no longer goes through the
# helper, or a kill point this test no longer covers).
EXPECTED_POINTS = {
    "input-digests", "stage-started", "stage-finished", "config:config.yaml", "checkpoint",
    "pretrain.final", "vocab", "ctc.label_filter", "ctc.final", "ctc.evaluation",
    "pretrain_text.tokenizer", "pretrain_text.final", "translator", "train_st.train_hours",
    "hypotheses", "cascade.hypotheses", "results.json", "results.md", "plot", "report.md",
    "report.json",
}  # fmt: skip


def _points(trace: Path) -> list[str]:
    """The distinct write points of a trace, in the order first passed."""
    return list(dict.fromkeys(trace.read_text(encoding="utf-8").split()))


def kill_at_each(points: list[str], cmd: list[str], trace: Path) -> None:
    """Run ``cmd`` once per point, each run SIGKILLed at its point (the runs continue each
    other's work); every one must die there."""
    for point in points:
        env = {**ENV, FAULT_AT: point, FAULT_LOG: str(trace)}
        run = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        err = run.stderr.decode()[-3000:]
        assert run.returncode == KILLED, f"not killed at {point}: {err}"
        assert trace.read_text().split()[-1] == point, err


needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")


@needs_espeak
@pytest.mark.slow
@pytest.mark.usefixtures("one_thread_module")
def test_pipeline_killed_at_every_write_point_then_rerun_equals_uninterrupted(
    root: Path,  # noqa: F811 (the fixture imported above)
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = yaml_with_out_dir(root, "chain")
    straight_trace = root / "straight.trace"
    monkeypatch.setenv(FAULT_LOG, str(straight_trace))
    assert main(["pipeline", str(root / "straight.yaml")]) == 0
    monkeypatch.delenv(FAULT_LOG)
    points = _points(straight_trace)
    assert set(points) >= EXPECTED_POINTS, EXPECTED_POINTS - set(points)
    cmd = [sys.executable, "-m", "samu_st", "pipeline", str(config)]
    kill_at_each(points, cmd, root / "chain.trace")
    capsys.readouterr()
    assert main(["pipeline", str(config)]) == 0
    straight, chain = root / "straight", root / "chain"
    assert outcome(chain) == outcome(straight)
    assert sum(same_tensors(straight / f, chain / f) for f in FINALS) >= len(FINALS)
    leftovers = [p for p in chain.rglob(".*") if ".tmp-" in p.name or ".old-" in p.name]
    assert not [p for p in leftovers if p.is_dir()], leftovers  # folders cleaned on rewrite
    for f in FINALS:  # each update of every training stage logged once
        log = [json.loads(x) for x in (chain / f).parent.joinpath("train_log.jsonl").open()]
        assert [r["step"] for r in log if r["kind"] == "train"] == list(range(1, 7))


def yaml_with_out_dir(grid: Path, name: str) -> Path:
    """A copy of the grid's straight.yaml writing to ``grid/name``."""
    import yaml

    data = yaml.safe_load((grid / "straight.yaml").read_text())
    data["pipeline"]["out_dir"] = str(grid / name)
    path = grid / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


# --- step 2 with its teacher caches (not in the grid above) ------------------------------------

DISTILL_POINTS = {"teacher.shard", "teacher.table_meta", "teacher.table", "checkpoint",
                  "distill.final"}  # fmt: skip


@needs_espeak
@pytest.mark.slow
@pytest.mark.usefixtures("one_thread_module")
def test_distill_killed_at_every_write_point_then_resume_equals_uninterrupted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from samu_st.data.mini_covost import MiniCovostConfig, prepare_mini

    mini = MiniCovostConfig(seed=3, languages=("fr", "de"), number_max=20, train_per_hour=0.0,
                            train_min=4, train_max=4, dev_per_language=2, test_per_language=2,
                            unlabeled_per_language=0, train_speakers=2, dev_speakers=2,
                            test_speakers=2)  # fmt: skip
    config = str(step_config(tmp_path, prepare_mini(tmp_path / "mini", mini, progress=False)))
    short = ["train.max_steps=4", "train.save_every=2"]
    straight, chain = tmp_path / "straight", tmp_path / "chain"
    monkeypatch.setenv(FAULT_LOG, str(tmp_path / "straight.trace"))
    assert main(["distill", config, f"out_dir={straight}", *short]) == 0
    monkeypatch.delenv(FAULT_LOG)
    points = _points(tmp_path / "straight.trace")
    assert set(points) >= DISTILL_POINTS, DISTILL_POINTS - set(points)
    cmd = [sys.executable, "-m", "samu_st", "distill", config, f"out_dir={chain}", *short]
    kill_at_each(points, [*cmd, "--resume"], tmp_path / "chain.trace")
    assert main([*cmd[3:], "--resume"]) == 0
    assert_same_state(checkpoint(straight, 4), checkpoint(chain, 4))
    assert same_tensors(straight / "final", chain / "final") >= 1
