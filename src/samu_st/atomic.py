"""Atomic files and folders: written under a temporary name in the same folder, then renamed
into place, so that a reader — or a rerun after a crash — sees the old version or the whole new
one, never half of one. Every file a step writes goes through :func:`atomic_write`,
:func:`write_text_atomic` or :func:`atomic_folder` (checkpoints have their own, fsynced, protocol
in :mod:`samu_st.training.checkpoint`, which calls :func:`fault_point` too).

Each call names its *write point* (``point="pretrain_text.tokenizer"``), the place a crash
test kills the process at; see :func:`fault_point`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

FAULT_AT = "SAMU_ST_FAULT_AT"
FAULT_LOG = "SAMU_ST_FAULT_LOG"


def fault_point(point: str, phase: str = "before") -> None:
    """Crash-test hook, called by every atomic write just before (``phase="before"``: the
    temporary file or folder is complete, the target untouched) and just after (``"after"``:
    renamed into place, nothing that follows done) its rename.

    - ``SAMU_ST_FAULT_AT=<point>`` makes the process SIGKILL itself (no cleanup, no flush, as an
      out-of-memory kill or a pre-empted job) at the first ``before`` of write point ``<point>``;
      ``SAMU_ST_FAULT_AT=<point>@after`` at its first ``after``.
    - ``SAMU_ST_FAULT_LOG=<file>`` appends ``<point>`` to ``<file>`` at every ``before``: the
      write points a run passes, in order (how a test lists the points to kill at).

    With neither variable set (every normal run) this is two dictionary look-ups.
    """
    at = os.environ.get(FAULT_AT)
    trace = os.environ.get(FAULT_LOG)
    if at is None and trace is None:
        return
    if trace and phase == "before":
        with open(trace, "a", encoding="utf-8") as handle:
            handle.write(point + "\n")
    if at == (point if phase == "before" else f"{point}@{phase}"):
        os.kill(os.getpid(), signal.SIGKILL)


def atomic_write(path: str | Path, write: Callable[[Path], object], *, point: str) -> Path:
    """Call ``write(tmp)`` to write a file at a temporary name beside ``path``, then rename it
    to ``path``; returns ``path``. A failed ``write`` leaves ``path`` as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        fault_point(point)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fault_point(point, "after")
    return path


def write_text_atomic(path: str | Path, text: str, *, point: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), point=point)


@contextlib.contextmanager
def atomic_folder(target: str | Path, *, point: str) -> Iterator[Path]:
    """``with atomic_folder(target, point=...) as tmp:`` — fill the empty folder ``tmp``;
    when the block ends without an exception it replaces ``target`` (:func:`replace_folder`),
    otherwise it is deleted. Temporary folders left beside ``target`` by killed processes are
    deleted first."""
    target = Path(target)
    _remove_leftovers(target)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_folder(tmp, target, point=point)


def replace_folder(tmp: Path, target: Path, *, point: str = "folder") -> Path:
    """Put the finished folder ``tmp`` at ``target`` (an old ``target`` is moved aside first and
    deleted after), so a reader never sees a half-written folder."""
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    fault_point(point)
    if target.exists():
        os.replace(target, old)
        fault_point(point, "between")  # no target now: the rerun puts `old` back
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)
    fault_point(point, "after")
    return target


def _dead_leftovers(target: Path, kind: str) -> list[Path]:
    """``.<name>.<kind>-<pid>`` beside ``target`` whose process is gone (a killed writer)."""
    from samu_st.training.lock import pid_alive  # samu_st.training imports this module

    found = []
    for path in target.parent.glob(f".{target.name}.{kind}-*"):
        pid = path.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
            found.append(path)
    return found


def _remove_leftovers(target: Path) -> None:
    """Delete the temporary files/folders (``.<name>.tmp-<pid>``) and moved-aside old versions
    (``.<name>.old-<pid>``) of killed writers beside ``target``; a live writer's are kept. A
    writer killed between the two renames of :func:`replace_folder` left no ``target`` but a
    complete old version: that one is put back first."""
    if not target.parent.is_dir():
        return
    if not target.exists():
        for old in _dead_leftovers(target, "old")[:1]:
            os.replace(old, target)
    for kind in ("tmp", "old"):
        for path in _dead_leftovers(target, kind):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
