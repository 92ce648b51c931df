import errno
import json
import logging
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from samu_st.errors import ModelLoadError
from samu_st.training import checkpoint as ck
from samu_st.training.checkpoint import (
    CheckpointError,
    CheckpointManager,
    capture_rng,
    load_trainable_state,
    restore_rng,
    trainable_state,
)
from samu_st.training.lock import FolderLock, FolderLockedError, pid_alive


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    model[0].requires_grad_(False)
    return model


def shared_state(model: nn.Module) -> dict:
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model(torch.randn(5, 3)).sum().backward()
    opt.step()
    return {"weights": trainable_state(model), "optimizer": opt.state_dict(), "scheduler": {}}


def save(mgr: CheckpointManager, model: nn.Module, step: int) -> Path:
    rank = {"rng": capture_rng(), "stream": {"epoch": 1, "position": step}}
    return mgr.save(step, shared_state(model), rank, {"step": step})


def test_rng_round_trip() -> None:
    state = capture_rng()
    first = (random.random(), float(np.random.randn()), torch.rand(3))
    restore_rng(state)
    again = (random.random(), float(np.random.randn()), torch.rand(3))
    assert first[:2] == again[:2] and torch.equal(first[2], again[2])


def test_save_load_round_trip_and_pruning(tmp_path: Path) -> None:
    model = tiny_model()
    mgr = CheckpointManager(tmp_path / "ckpt", keep_last=2)
    for step in (3, 6, 9):
        save(mgr, model, step)
    assert [p.name for p in mgr.checkpoints()] == ["step-00000006", "step-00000009"]
    assert (tmp_path / "ckpt" / "latest").read_text().strip() == "step-00000009"
    loaded = mgr.load_latest()
    assert loaded is not None and loaded.step == 9
    assert loaded.rank["stream"] == {"epoch": 1, "position": 9}
    # trainable weights + persistent buffers only: the frozen layer is not saved
    assert sorted(loaded.weights) == [
        "1.bias", "1.num_batches_tracked", "1.running_mean", "1.running_var", "1.weight",
        "2.bias", "2.weight",
    ]  # fmt: skip
    fresh = tiny_model()
    load_trainable_state(fresh, loaded.weights, loaded.path)
    for name, t in trainable_state(model).items():
        assert torch.equal(t, trainable_state(fresh)[name]), name
    assert loaded.optimizer.get("state")


@pytest.mark.parametrize("damage", ["truncate", "garble", "missing_state"])
def test_corrupt_newest_falls_back(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    model = tiny_model()
    mgr = CheckpointManager(tmp_path, keep_last=3)
    save(mgr, model, 1)
    newest = save(mgr, model, 2)
    weights = newest / "weights.safetensors"
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:100])
    elif damage == "garble":
        data = bytearray(weights.read_bytes())
        data[8:40] = b"\xff" * 32  # same size, broken header
        weights.write_bytes(bytes(data))
    else:
        (newest / "trainer_state.json").unlink()
    with caplog.at_level(logging.WARNING):
        loaded = mgr.load_latest()
    assert loaded is not None and loaded.step == 1
    assert "step-00000002: unreadable checkpoint" in caplog.text


def test_all_corrupt_is_an_error(tmp_path: Path) -> None:
    mgr = CheckpointManager(tmp_path, keep_last=3)
    path = save(mgr, tiny_model(), 1)
    (path / "optimizer.pt").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="none of the 1 checkpoints is readable"):
        mgr.load_latest()
    assert CheckpointManager(tmp_path / "empty", keep_last=1).load_latest() is None


def test_full_disk_keeps_previous(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_model()
    mgr = CheckpointManager(tmp_path, keep_last=1)
    save(mgr, model, 5)

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ck, "save_file", disk_full)
    with pytest.raises(CheckpointError) as err:
        save(mgr, model, 6)
    msg = str(err.value)
    assert "No space left on device" in msg and "step-00000005) is intact" in msg
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "step-00000005"]  # no tmp
    loaded = mgr.load_latest()
    assert loaded is not None and loaded.step == 5


def test_shape_mismatch_names_the_tensor(tmp_path: Path) -> None:
    mgr = CheckpointManager(tmp_path, keep_last=1)
    save(mgr, tiny_model(), 1)
    loaded = mgr.load_latest()
    assert loaded is not None
    other = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 3))
    with pytest.raises(
        ModelLoadError, match=r"tensor '2.bias' has shape \(2,\) in the checkpoint but \(3,\)"
    ):
        load_trainable_state(other, loaded.weights, loaded.path)
    bigger = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2), nn.Linear(2, 2))
    with pytest.raises(ModelLoadError, match=r"trainable tensor '0\.weight' is missing"):
        load_trainable_state(bigger, loaded.weights, loaded.path)


def test_tied_trainable_weights_save_once(tmp_path: Path) -> None:
    emb = nn.Embedding(5, 3)
    out = nn.Linear(3, 5, bias=False)
    out.weight = emb.weight
    model = nn.ModuleDict({"emb": emb, "out": out})
    tensors = trainable_state(model)
    assert list(tensors) == ["emb.weight"]
    mgr = CheckpointManager(tmp_path, keep_last=1)
    shared = {"weights": tensors, "optimizer": {}, "scheduler": {}}
    mgr.save(1, shared, {"rng": capture_rng()}, {"step": 1})
    loaded = mgr.load_latest()
    assert loaded is not None
    with torch.no_grad():
        emb.weight.zero_()
    load_trainable_state(model, loaded.weights, loaded.path)
    assert torch.equal(out.weight, tensors["emb.weight"])


# --- output-folder lock -----------------------------------------------------------------------

HOLD_LOCK = """
import sys, time
sys.path.insert(0, sys.argv[2])
from samu_st.training.lock import FolderLock
FolderLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(60)
"""


def test_lock_refuses_a_live_run_and_takes_over_after_it_dies(tmp_path: Path) -> None:
    src = str(Path(__file__).resolve().parents[1] / "src")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(tmp_path), src], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(FolderLockedError, match=f"PID {holder.pid} on"):
            FolderLock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait()
    with FolderLock(tmp_path) as lock:  # SIGKILL released the flock: taken over
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    assert not lock.path.exists()


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert not pid_alive(proc.pid)
    return proc.pid


def test_stale_lock_of_dead_pid_is_taken_over(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pid = dead_pid()
    (tmp_path / ".lock").write_text(json.dumps({"pid": pid, "host": socket.gethostname()}))
    with caplog.at_level(logging.WARNING), FolderLock(tmp_path) as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    assert f"stale lock of dead PID {pid}" in caplog.text


def test_pid_fallback_without_flock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from samu_st.training import lock as lock_module

    monkeypatch.setattr(lock_module, "fcntl", None)  # a filesystem without flock
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        owner = {"pid": sleeper.pid, "host": socket.gethostname(), "since": time.time()}
        (tmp_path / ".lock").write_text(json.dumps(owner))
        with pytest.raises(FolderLockedError, match=f"PID {sleeper.pid}"):
            FolderLock(tmp_path).acquire()
    finally:
        sleeper.kill()
        sleeper.wait()
    with FolderLock(tmp_path) as lock:  # the PID is dead now
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
