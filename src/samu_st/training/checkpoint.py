"""Atomic, exactly resumable training checkpoints.

Layout of ``<out_dir>/checkpoints``::

    step-00001000/
        weights.safetensors   trainable parameters + persistent buffers (safetensors)
        optimizer.pt          optimizer (+ fp16 grad scaler) state
        scheduler.pt          LR scheduler state
        rank-0.pt ...         per process: RNG states, sampler state, epoch, batches consumed
        trainer_state.json    step, counters, world size, and the size of every file above
    latest                    name of the newest checkpoint (for tools; loading scans steps)

A checkpoint is written into ``.tmp-step-N`` beside its final name, every file fsync'ed, and
then renamed: a crash or a full disk leaves either the complete new checkpoint or none, and the
previous ones are untouched. ``.pt`` files hold only tensors and plain Python values, so they load
with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from samu_st.atomic import fault_point
from samu_st.errors import ModelLoadError, SamuError

log = logging.getLogger(__name__)

WEIGHTS = "weights.safetensors"
OPTIMIZER = "optimizer.pt"
SCHEDULER = "scheduler.pt"
STATE = "trainer_state.json"
LATEST = "latest"
_STEP_DIR = re.compile(r"^step-(\d+)$")


class CheckpointError(SamuError):
    """A checkpoint that cannot be written, or no checkpoint that can be loaded."""


# --- RNG ------------------------------------------------------------------------------------


def capture_rng() -> dict[str, Any]:
    """RNG states of python, numpy, torch CPU and CUDA, as weights_only-loadable values."""
    np_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng`."""
    random.setstate(state["python"])
    npy = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": "MT19937",
            "state": {"key": npy["key"].numpy().astype(np.uint32), "pos": npy["pos"]},
            "has_gauss": npy["has_gauss"],
            "gauss": npy["gauss"],
        }
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --- weights --------------------------------------------------------------------------------


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Trainable parameters and persistent buffers (tied tensors once), as CPU copies."""
    persistent = set(model.state_dict(keep_vars=True))
    tensors: dict[str, torch.Tensor] = {
        n: p for n, p in model.named_parameters() if p.requires_grad
    }
    tensors.update({n: b for n, b in model.named_buffers() if n in persistent})
    return {n: t.detach().to("cpu", copy=True).contiguous() for n, t in tensors.items()}


def load_trainable_state(model: nn.Module, tensors: dict[str, torch.Tensor], source: Path) -> None:
    """Copy ``tensors`` into ``model`` in place (optimizer references stay valid).

    Raises :class:`ModelLoadError` naming the tensor when a name is unknown, a shape differs, or
    a trainable parameter of the model is missing from the checkpoint.
    """
    targets: dict[str, torch.Tensor] = dict(model.named_parameters())
    targets.update(dict(model.named_buffers()))
    for name, value in tensors.items():
        if name not in targets:
            raise ModelLoadError(f"{source}: tensor {name!r} is not in the model")
        if tuple(targets[name].shape) != tuple(value.shape):
            raise ModelLoadError(
                f"{source}: tensor {name!r} has shape {tuple(value.shape)} in the checkpoint "
                f"but {tuple(targets[name].shape)} in the model"
            )
    missing = [n for n, p in model.named_parameters() if p.requires_grad and n not in tensors]
    if missing:
        raise ModelLoadError(
            f"{source}: trainable tensor {missing[0]!r} is missing from the checkpoint "
            f"({len(missing)} missing); was it written with other trainable parameters?"
        )
    with torch.no_grad():
        for name, value in tensors.items():
            targets[name].copy_(value)


# --- files ----------------------------------------------------------------------------------


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _torch_save(obj: Any, path: Path) -> None:
    with open(path, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".tmp-{path.name}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_path(path.parent)


def _step_of(path: Path) -> int:
    match = _STEP_DIR.match(path.name)
    return int(match.group(1)) if match else -1


@dataclass
class Checkpoint:
    """A checkpoint read back into memory (CPU tensors)."""

    path: Path
    weights: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    rank: dict[str, Any]  # this process's RNG, sampler, epoch, batches consumed
    trainer: dict[str, Any]  # step, counters, world_size

    @property
    def step(self) -> int:
        return int(self.trainer["step"])


def _always_ok(ok: bool) -> bool:
    return ok


class CheckpointManager:
    """Writes, lists, prunes and loads the checkpoints of one run.

    Under DDP every process calls :meth:`save` together: each writes its own ``rank-R.pt``, the
    main process writes the shared files and renames the folder. ``all_ok(flag)`` must return
    True on every process iff every process passed True (an all-reduce; it also serves as a
    barrier), so that a write failing on one process fails the save everywhere without a hang.
    """

    def __init__(
        self,
        root: str | Path,
        keep_last: int,
        rank: int = 0,
        world_size: int = 1,
        all_ok: Callable[[bool], bool] = _always_ok,
    ) -> None:
        self.root = Path(root)
        self.keep_last = keep_last
        self.rank = rank
        self.world_size = world_size
        self.all_ok = all_ok

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def checkpoints(self) -> list[Path]:
        """Complete checkpoint folders, oldest first."""
        if not self.root.is_dir():
            return []
        found = [p for p in self.root.iterdir() if p.is_dir() and _step_of(p) >= 0]
        return sorted(found, key=_step_of)

    def clean_partial(self) -> None:
        """Remove temporary folders left by a write that was interrupted (main process)."""
        if self.is_main and self.root.is_dir():
            for p in self.root.glob(".tmp-*"):
                if p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)

    def save(
        self,
        step: int,
        shared: dict[str, Any] | None,
        rank_state: dict[str, Any],
        trainer: dict[str, Any],
    ) -> Path:
        """Write checkpoint ``step`` atomically and prune old ones; returns its folder.

        ``shared`` (main process only) holds ``weights`` (name → tensor), ``optimizer`` and
        ``scheduler`` state dicts. Raises :class:`CheckpointError` when the write fails; the
        previous checkpoints are then untouched.
        """
        final = self.root / f"step-{step:08d}"
        tmp = self.root / f".tmp-{final.name}"
        err: Exception | None = None
        if self.is_main:
            try:
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir(parents=True)
            except OSError as e:
                err = e
        self._check(err, final, tmp)
        try:
            _torch_save(rank_state, tmp / f"rank-{self.rank}.pt")
            if self.is_main:
                if shared is None:
                    raise ValueError("the main process must pass the shared state")
                save_file(shared["weights"], str(tmp / WEIGHTS))
                _fsync_path(tmp / WEIGHTS)
                _torch_save(shared["optimizer"], tmp / OPTIMIZER)
                _torch_save(shared["scheduler"], tmp / SCHEDULER)
        except OSError as e:
            err = e
        self._check(err, final, tmp)
        if self.is_main:
            try:
                self._commit(tmp, final, trainer)
            except OSError as e:
                err = e
        self._check(err, final, tmp)
        if self.is_main:
            self._after_commit(final)
        return final

    def _check(self, err: Exception | None, final: Path, tmp: Path) -> None:
        if self.all_ok(err is None):
            return
        if self.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
        done = self.checkpoints()
        previous = str(done[-1]) if done else "none"
        reason = err if err is not None else "the write failed on another process"
        raise CheckpointError(
            f"{final}: could not write the checkpoint ({reason}); "
            f"the previous checkpoint ({previous}) is intact"
        )

    def _commit(self, tmp: Path, final: Path, trainer: dict[str, Any]) -> None:
        files = {p.name: p.stat().st_size for p in sorted(tmp.iterdir())}
        with open(tmp / STATE, "w", encoding="utf-8") as f:
            json.dump({**trainer, "world_size": self.world_size, "files": files}, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        _fsync_path(tmp)
        if final.exists():  # a stale (e.g. corrupt) checkpoint of the same step
            stale = final.with_name(f".tmp-stale-{final.name}")
            os.rename(final, stale)
            shutil.rmtree(stale, ignore_errors=True)
        fault_point("checkpoint")
        os.rename(tmp, final)
        _fsync_path(self.root)
        fault_point("checkpoint", "after")

    def _after_commit(self, final: Path) -> None:
        """Pointer and pruning: failures here lose nothing, so they only warn."""
        try:
            _write_text_atomic(self.root / LATEST, final.name + "\n")
            for old in self.checkpoints()[: -self.keep_last]:
                if old != final:
                    shutil.rmtree(old)
        except OSError as e:
            log.warning(
                "%s: checkpoint written, but updating 'latest'/pruning failed: %s", final, e
            )

    def load(self, path: Path) -> Checkpoint:
        """Read one checkpoint; raises on any missing, truncated or unreadable file."""
        trainer = json.loads((path / STATE).read_text(encoding="utf-8"))
        for name, size in trainer["files"].items():
            actual = (path / name).stat().st_size
            if actual != size:
                raise ValueError(f"{name} has {actual} bytes, {size} were written")
        if trainer["world_size"] != self.world_size:
            raise CheckpointError(
                f"{path}: written by {trainer['world_size']} process(es), resumed with "
                f"{self.world_size}; resume with the same number for an exact continuation"
            )
        return Checkpoint(
            path=path,
            weights=load_file(str(path / WEIGHTS)),
            optimizer=torch.load(path / OPTIMIZER, map_location="cpu", weights_only=True),
            scheduler=torch.load(path / SCHEDULER, map_location="cpu", weights_only=True),
            rank=torch.load(path / f"rank-{self.rank}.pt", map_location="cpu", weights_only=True),
            trainer=trainer,
        )

    def load_latest(self) -> Checkpoint | None:
        """The newest readable checkpoint (older ones are tried when newer ones are broken).

        Returns None when there is no checkpoint at all; raises :class:`CheckpointError` when
        there are some but none can be read.
        """
        found = self.checkpoints()
        for path in reversed(found):
            try:
                return self.load(path)
            except CheckpointError:
                raise
            except Exception as e:  # any unreadable part: fall back to the previous checkpoint
                log.warning("%s: unreadable checkpoint (%s); trying the previous one", path, e)
        if found:
            raise CheckpointError(f"{self.root}: none of the {len(found)} checkpoints is readable")
        return None

    def set_aside_newer(self, step: int) -> None:
        """Rename unreadable checkpoints newer than ``step`` to ``corrupt-step-N`` (main only)."""
        if not self.is_main:
            return
        for path in self.checkpoints():
            if _step_of(path) > step:
                target = path.with_name(f"corrupt-{path.name}")
                with contextlib.suppress(OSError):
                    shutil.rmtree(target, ignore_errors=True)
                    os.rename(path, target)
                    log.warning("%s: set aside as %s", path, target.name)
