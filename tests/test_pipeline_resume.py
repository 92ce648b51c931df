"""Crash safety of the whole grid: ``samu-st pipeline`` SIGKILLed at seeded random points (inside
a training stage, and just after a stage finished), then run again with the same command, ends
with the report, hypotheses and exported weights of an uninterrupted run, bit for bit."""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from samu_st.cli import main
from samu_st.data.mini_covost import MiniCovostConfig, prepare_mini
from test_crash_safety import ENV, same_tensors

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")

STEPS = 6  # updates of every training stage
QUIET = {"tensorboard": False, "progress_bar": False, "log_every": 1, "save_every": 2}
TINY = {"size": "tiny", "hidden_dropout": 0.0, "attention_dropout": 0.0}
SYSTEMS = ("xlsr-A", "cascade")
# Training stages (their folders under out_dir) and the stages that finish before the last one.
TRAINING = ("pretrain", "ctc", "pretrain_text", "mt", "st/xlsr-A")
STAGES = ("corpus", "pretrain", "ctc", "pretrain_text", "mt", "st__xlsr-A", "eval__xlsr-A")
SEEDS = (0, 1)  # even: killed inside a training stage; odd: killed right after a stage
FINALS = ("pretrain/final", "ctc/final", "pretrain_text/final", "mt/final", "st/xlsr-A/final")


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """The in-process run uses one thread like the subprocesses (OMP_NUM_THREADS=1): the same
    kernels in the same order, so results can be compared bit for bit."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def steps_yaml() -> dict[str, Any]:
    data = {"manifests": ["X"], "max_duration": 6.0}
    train = {"max_steps": STEPS, **QUIET}
    return {
        "pretrain": {
            "out_dir": "X",
            "data": data,
            "encoder": {**TINY, "train_feature_encoder": True, "mask_time_prob": 0.05},
            "masking": {"mask_length": 2, "mask_prob": 0.4},
            "train": train,
        },
        "train_ctc": {"out_dir": "X", "data": data, "encoder": TINY, "train": train},
        "pretrain_text": {
            "out_dir": "X",
            "data": {"manifests": ["X"]},
            "vocab_size": 60,
            "preset": "tiny",
            "train": train,
        },
        "train_mt": {
            "out_dir": "X",
            "data": {"manifests": ["X"]},
            "objective": "translate",
            "train": train,
        },
        "train_st": {
            "out_dir": "X",
            "data": data,
            "model": {"encoder": {**TINY, "mode": "adapters"}, "decoder": {"preset": "tiny"}},
            "train": train,
            "val_bleu_utterances": 0,
        },
    }


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A corpus made once, the steps file, and one grid config per run (own out_dir)."""
    root = tmp_path_factory.mktemp("grid")
    mini = MiniCovostConfig(seed=2, languages=("fr", "de"), number_max=12, train_per_hour=0.0,
                            train_min=6, train_max=6, dev_per_language=2, test_per_language=2,
                            unlabeled_per_language=2, train_speakers=3, dev_speakers=1,
                            test_speakers=1)  # fmt: skip
    prepare_mini(root / "corpus", mini, progress=False)
    (root / "steps.yaml").write_text(yaml.safe_dump(steps_yaml()))
    for name in ("straight", *(f"victim{s}" for s in SEEDS)):
        pipeline = {
            "out_dir": str(root / name),
            "steps": str(root / "steps.yaml"),
            "corpus": {"kind": "manifests", "path": str(root / "corpus")},
            "systems": list(SYSTEMS),
            "tables": ["table4"],
            "beam": 2,
        }
        (root / f"{name}.yaml").write_text(yaml.safe_dump({"pipeline": pipeline}))
    return root


def kill_point(seed: int) -> tuple[str, int, float]:
    """(file under out_dir, lines it must have, extra delay in s) before the SIGKILL."""
    rng = random.Random(f"pipeline-kill-{seed}")
    if seed % 2 == 0:  # inside a training stage, after some updates were logged
        stage = rng.choice(TRAINING)
        return f"{stage}/train_log.jsonl", rng.randint(1, STEPS - 3), rng.uniform(0.0, 0.05)
    return f"stages/{rng.choice(STAGES)}.json", 1, rng.uniform(0.0, 0.2)


def lines(path: Path) -> int:
    try:
        return sum(1 for _ in path.open(encoding="utf-8"))
    except FileNotFoundError:
        return 0


def kill_when(proc: subprocess.Popen[bytes], out: Path, rel: str, count: int, delay: float) -> int:
    """SIGKILL ``proc`` ``delay`` s after ``out/rel`` has ``count`` lines; returns the number of
    stages it had finished."""
    path = out / rel
    deadline = time.monotonic() + 240
    while lines(path) < count and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL, f"not killed mid-run: {err.decode()[-3000:]}"
    return len([p for p in out.glob("stages/*.json") if not p.name.endswith(".started.json")])


def outcome(out: Path) -> dict[str, Any]:
    """What a finished grid produced, without paths and timings."""
    report = json.loads((out / "report" / "report.json").read_text())
    hyps = {s: (out / "eval" / s / "hypotheses.jsonl").read_text() for s in SYSTEMS}
    return {"models": report["models"], "hypotheses": hyps}


def test_pipeline_sigkill_then_rerun_equals_uninterrupted(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cmd = [sys.executable, "-m", "samu_st", "pipeline"]
    victims = {
        s: subprocess.Popen([*cmd, str(root / f"victim{s}.yaml")], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for s in SEEDS
    }  # fmt: skip
    points = {s: kill_point(s) for s in SEEDS}
    with ThreadPoolExecutor(len(SEEDS)) as pool:
        kills = [
            pool.submit(kill_when, proc, root / f"victim{s}", *points[s])
            for s, proc in victims.items()
        ]
        assert main(["pipeline", str(root / "straight.yaml")]) == 0  # meanwhile, in-process
        finished = [kill.result() for kill in kills]
    straight = root / "straight"
    expected = outcome(straight)
    assert [m["model"] for m in expected["models"]] == list(SYSTEMS)
    capsys.readouterr()
    for seed, done in zip(SEEDS, finished, strict=True):
        victim = root / f"victim{seed}"
        assert 1 <= done < len(STAGES) + 2 and not (victim / "report").exists()  # died mid-run
        if seed % 2 == 0:
            stage = Path(points[seed][0]).parent
            assert not (victim / stage / "final").exists()  # killed inside this training stage
        assert main(["pipeline", str(root / f"victim{seed}.yaml")]) == 0
        assert capsys.readouterr().out.count("done earlier") == done  # finished stages reused
        assert outcome(victim) == expected, seed
        assert sum(same_tensors(straight / f, victim / f) for f in FINALS) >= len(FINALS)
        for f in FINALS:  # each update of every training stage logged once
            log = [json.loads(x) for x in (victim / f).parent.joinpath("train_log.jsonl").open()]
            assert [r["step"] for r in log if r["kind"] == "train"] == list(range(1, STEPS + 1))
