"""Crash safety: SIGKILL at seeded random points, then ``--resume``, ends with exactly the weights
and optimizer state of an uninterrupted run — for the toy task and for the real step commands.

Covered elsewhere, not repeated: a checkpoint write that fails (full disk) leaves the previous
one loadable, a corrupt newest checkpoint falls back to the one before, and the folder lock of a
dead process is taken over (test_checkpoint.py); one fixed kill point with the run log compared
(test_resume_kill.py). Here: several random kill points at once, and a second live run on the
same output folder refused by the CLI.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from safetensors.torch import load_file

from samu_st.training.tracking import read_jsonl

TOY = Path(__file__).with_name("toy_train.py")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
LOG = "train_log.jsonl"


def spawn(cmd: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def finish(proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    _, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err.decode()[-3000:]


def logged_updates(out: Path) -> int:
    try:
        return sum(1 for _ in (out / LOG).open(encoding="utf-8"))
    except FileNotFoundError:
        return 0


def kill_after(proc: subprocess.Popen[bytes], out: Path, updates: int, delay: float) -> int:
    """SIGKILL ``proc`` ``delay`` s after its log shows ``updates`` updates; returns that count."""
    deadline = time.monotonic() + 120
    while logged_updates(out) < updates and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(delay)
    seen = logged_updates(out)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL, f"finished before the kill: {err.decode()[-2000:]}"
    return seen


def checkpoint(out: Path, step: int) -> Path:
    return out / "checkpoints" / f"step-{step:08d}"


def assert_same_state(a: Path, b: Path) -> None:
    """Same trainable weights and Adam moments, bit for bit."""
    wa, wb = load_file(a / "weights.safetensors"), load_file(b / "weights.safetensors")
    assert wa.keys() == wb.keys() and len(wa) > 0
    for name in wa:
        assert torch.equal(wa[name], wb[name]), name
    oa = torch.load(a / "optimizer.pt", weights_only=True)["optimizer"]["state"]
    ob = torch.load(b / "optimizer.pt", weights_only=True)["optimizer"]["state"]
    assert oa.keys() == ob.keys() and len(oa) > 0
    for i in oa:
        for key in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(oa[i][key], ob[i][key]), (i, key)


# --- the toy task, several seeded kill points at once --------------------------------------------

TOY_STEPS = 40
TOY_ARGS = ["--steps", str(TOY_STEPS), "--save-every", "5", "--step-sleep", "0.02"]
SEEDS = (0, 1, 2)


def kill_point(seed: int) -> tuple[int, float]:
    """(updates logged before the kill, extra delay in s): anywhere, mid-update or mid-save."""
    rng = random.Random(seed)
    return rng.randint(1, TOY_STEPS - 6), rng.uniform(0.0, 0.03)


def run_toy(out: Path, *extra: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``python tests/toy_train.py OUT ...`` in this process (same code, no start-up cost)."""
    import toy_train

    monkeypatch.setattr(sys, "argv", [str(TOY), str(out), *TOY_ARGS, *extra])
    toy_train.main()


def test_toy_sigkill_at_random_points_then_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    toy = [sys.executable, str(TOY)]
    victims = {s: spawn([*toy, str(tmp_path / f"victim{s}"), *TOY_ARGS]) for s in SEEDS}
    with ThreadPoolExecutor(len(SEEDS)) as pool:
        kills = {
            s: pool.submit(kill_after, proc, tmp_path / f"victim{s}", *kill_point(s))
            for s, proc in victims.items()
        }
        run_toy(tmp_path / "straight", monkeypatch=monkeypatch)  # meanwhile
        killed_at = {s: k.result() for s, k in kills.items()}
    assert len(set(killed_at.values())) == len(SEEDS)  # three different points
    final = checkpoint(tmp_path / "straight", TOY_STEPS)
    reference = [(r["step"], r["loss"]) for r in read_jsonl(tmp_path / "straight" / LOG)]
    for seed in SEEDS:
        out = tmp_path / f"victim{seed}"
        run_toy(out, "--resume", monkeypatch=monkeypatch)
        result = read_jsonl(out / "result.json")[0]
        assert result["step"] == TOY_STEPS
        # resumed from the newest checkpoint before the kill (multiples of 5), or from scratch
        expected = killed_at[seed] // 5 * 5
        assert (result["resumed_from"] or 0) in (expected, expected - 5), (seed, killed_at[seed])
        assert_same_state(final, checkpoint(out, TOY_STEPS))
        assert [(r["step"], r["loss"]) for r in read_jsonl(out / LOG)] == reference


# --- the real step commands ----------------------------------------------------------------------

STEP_COMMANDS = ("pretrain", "distill", "train-st", "train-ctc")
REAL_STEPS, REAL_SAVE_EVERY = 12, 3
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """The in-process runs use one thread, as the subprocesses do (OMP_NUM_THREADS=1): the
    same kernels in the same order, so the weights can be compared bit for bit."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def step_config(root: Path, corpus: Path) -> Path:
    """One YAML with a tiny section per step, all on the same two-language mini corpus.

    train-st gets a fixed target tokenizer: the one it trains otherwise is not deterministic
    (the step saves it in out_dir and a resume reloads it, but an independent reference run
    would train another one).
    """
    from num2words import num2words

    from samu_st.models.tokenizer import train_target_tokenizer

    tokenizer = root / "tokenizer"
    train_target_tokenizer([num2words(i) for i in range(30)], 40).save(tokenizer)
    train = {"max_steps": REAL_STEPS, "log_every": 1, "save_every": REAL_SAVE_EVERY, "seed": 7,
             "tensorboard": False, "progress_bar": False}  # fmt: skip
    data = {"manifests": [str(p) for p in sorted((corpus / "train").glob("*.jsonl"))],
            "max_duration": 6.0}  # fmt: skip
    tiny = {"size": "tiny"}
    sections: dict[str, dict[str, Any]] = {
        "pretrain": {
            "data": {"manifests": [str(corpus / "unlabeled.jsonl")], "max_duration": 6.0},
            "encoder": {**tiny, "train_feature_encoder": True, "mask_time_prob": 0.2},
        },
        "distill": {"data": data, "encoder": tiny},
        "train_st": {
            "data": data,
            "model": {
                "encoder": {**tiny, "mode": "adapters"},
                "decoder": {"preset": "tiny"},
                "tokenizer": str(tokenizer),
            },
        },
        "train_ctc": {"data": data, "encoder": tiny},
    }
    text = {k: {"out_dir": "set-by-override", **v, "train": train} for k, v in sections.items()}
    path = root / "steps.yaml"
    path.write_text(yaml.safe_dump(text), encoding="utf-8")
    return path


@dataclass
class KilledRuns:
    config: Path
    root: Path
    killed_at: dict[str, int]  # step command -> updates logged at the kill
    holder: subprocess.Popen[bytes]  # a long training run holding root/held


def samu_st(*args: str) -> list[str]:
    return [sys.executable, "-m", "samu_st", *args]


def real_kill_point(command: str) -> tuple[int, float]:
    rng = random.Random(f"kill-{command}")
    return rng.randint(1, REAL_STEPS - 4), rng.uniform(0.0, 0.05)


@pytest.fixture(scope="module")
def killed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KilledRuns]:
    """Every step command started at once and SIGKILLed at its own seeded point, plus a long
    run that holds a folder (the lock test)."""
    from samu_st.data.mini_covost import MiniCovostConfig, prepare_mini

    root = tmp_path_factory.mktemp("steps")
    mini = MiniCovostConfig(seed=3, languages=("fr", "de"), number_max=20, train_per_hour=0.0,
                            train_min=8, train_max=8, dev_per_language=2, test_per_language=2,
                            unlabeled_per_language=0, train_speakers=4, dev_speakers=2,
                            test_speakers=2)  # fmt: skip
    config = step_config(root, prepare_mini(root / "mini", mini, progress=False))
    # A real training run holding root/held (the toy: the lock does not depend on the step).
    holder = spawn([sys.executable, str(TOY), str(root / "held"), "--steps", "100000",
                    "--save-every", "100000", "--step-sleep", "0.05"])  # fmt: skip
    victims = {c: spawn(samu_st(c, str(config), f"out_dir={root / c}")) for c in STEP_COMMANDS}
    with ThreadPoolExecutor(len(victims)) as pool:
        futures = {
            c: pool.submit(kill_after, proc, root / c, *real_kill_point(c))
            for c, proc in victims.items()
        }
        killed_at = {c: f.result() for c, f in futures.items()}
    try:
        yield KilledRuns(config, root, killed_at, holder)
    finally:
        holder.kill()
        holder.communicate(timeout=30)


def same_tensors(a: Path, b: Path) -> int:
    """Every .safetensors file under ``a`` equals its twin under ``b``; returns the file count."""
    files = sorted(p.relative_to(a) for p in a.rglob("*.safetensors"))
    for rel in files:
        ta, tb = load_file(a / rel), load_file(b / rel)
        assert ta.keys() == tb.keys(), rel
        for name in ta:
            assert torch.equal(ta[name], tb[name]), (rel, name)
    return len(files)


@needs_espeak
@pytest.mark.parametrize(
    "command",
    STEP_COMMANDS,
)
def test_step_sigkill_then_resume(command: str, killed: KilledRuns, tmp_path: Path) -> None:
    from samu_st.cli import main

    victim, reference = killed.root / command, tmp_path / "reference"
    assert 1 <= killed.killed_at[command] < REAL_STEPS
    assert not (victim / "final").exists()  # it really died mid-run
    assert main([command, str(killed.config), f"out_dir={reference}"]) == 0
    assert main([command, str(killed.config), f"out_dir={victim}", "--resume"]) == 0
    assert_same_state(checkpoint(reference, REAL_STEPS), checkpoint(victim, REAL_STEPS))
    assert same_tensors(reference / "final", victim / "final") >= 1
    steps = [r["step"] for r in read_jsonl(victim / LOG) if r.get("kind", "train") == "train"]
    assert steps == list(range(1, REAL_STEPS + 1))  # each update logged once


@needs_espeak
def test_second_run_on_a_live_folder_is_refused(
    killed: KilledRuns, capsys: pytest.CaptureFixture[str]
) -> None:
    from samu_st.cli import main

    held = killed.root / "held"
    deadline = time.monotonic() + 120
    while not logged_updates(held) and killed.holder.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert killed.holder.poll() is None and logged_updates(held) > 0
    for extra in ([], ["--resume"]):
        before = sorted(p.name for p in held.iterdir())
        assert main(["pretrain", str(killed.config), f"out_dir={held}", *extra]) == 2
        err = capsys.readouterr().err
        assert f"samu-st: error: {held}: output folder is in use by another run (PID " in err
        assert str(killed.holder.pid) in err
        assert sorted(p.name for p in held.iterdir()) == before  # nothing written
    assert killed.holder.poll() is None  # the first run goes on
