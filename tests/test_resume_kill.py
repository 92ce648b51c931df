"""SIGKILL a training mid-run, resume it, and get bit-identical weights to an unbroken run."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from samu_st.training.tracking import read_jsonl

TOY = Path(__file__).with_name("toy_train.py")
ARGS = ["--steps", "40", "--save-every", "6", "--step-sleep", "0.03"]


def toy(out: Path, *extra: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(TOY), str(out), *ARGS, *extra]
    return subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE)


def finish(proc: subprocess.Popen[bytes]) -> None:
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()[-3000:]


def test_sigkill_then_resume_equals_uninterrupted(tmp_path: Path) -> None:
    straight = toy(tmp_path / "straight")
    victim = toy(tmp_path / "victim")
    target = tmp_path / "victim" / "checkpoints" / "step-00000012"
    deadline = time.monotonic() + 90
    while not target.exists() and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert target.exists(), "no checkpoint appeared"
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=30)
    assert victim.returncode == -signal.SIGKILL  # killed mid-run, not finished
    assert (tmp_path / "victim" / ".lock").exists()  # left behind by the dead process
    finish(toy(tmp_path / "victim", "--resume"))
    finish(straight)

    resumed = read_jsonl(tmp_path / "victim" / "result.json")[0]
    assert 12 <= resumed["resumed_from"] < 40 and resumed["step"] == 40
    final = Path("checkpoints") / "step-00000040"
    a = load_file(tmp_path / "straight" / final / "weights.safetensors")
    b = load_file(tmp_path / "victim" / final / "weights.safetensors")
    assert a.keys() == b.keys() and len(a) == 4
    for name in a:
        assert torch.equal(a[name], b[name]), name
    opt_a = torch.load(tmp_path / "straight" / final / "optimizer.pt", weights_only=True)
    opt_b = torch.load(tmp_path / "victim" / final / "optimizer.pt", weights_only=True)
    for i, state in opt_a["optimizer"]["state"].items():
        assert torch.equal(state["exp_avg_sq"], opt_b["optimizer"]["state"][i]["exp_avg_sq"])
    # the log of the resumed run is the same curve, each step once
    log_a = [(r["step"], r["loss"]) for r in read_jsonl(tmp_path / "straight" / "train_log.jsonl")]
    log_b = [(r["step"], r["loss"]) for r in read_jsonl(tmp_path / "victim" / "train_log.jsonl")]
    assert log_a == log_b and len(log_a) == 40
