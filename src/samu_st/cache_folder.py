"""Folders that samu-st builds once into its cache (``$SAMU_ST_CACHE``, else
``~/.cache/samu-st``): the multilingual-e5-small teacher, the converted Whisper base.

:func:`build_once` builds ``<base>/<name>`` under a temporary name and renames it into place, so
an existing folder is always complete. Processes building the same folder (the ranks of a job)
wait for the first under ``flock``; the kernel releases the lock if its holder dies, and the
temporary folders of dead processes on this host are removed before the next build.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

from samu_st.training.lock import pid_alive

try:
    import fcntl
except ImportError:  # pragma: no cover - not on POSIX
    fcntl = None  # type: ignore[assignment]

CACHE_ENV = "SAMU_ST_CACHE"  # folder for models samu-st builds; default ~/.cache/samu-st


def default_cache_dir() -> Path:
    """``$SAMU_ST_CACHE``, else ``~/.cache/samu-st``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "samu-st"


@contextlib.contextmanager
def _build_lock(path: Path) -> Iterator[None]:
    """Without flock every process builds, and the first rename wins."""
    with path.open("a") as handle:
        if fcntl is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        yield


def _remove_stale(base: Path, name: str) -> None:
    """Temporary folders of dead processes on this host (a killed build)."""
    host = socket.gethostname()
    for tmp in base.glob(f".{name}.tmp-{host}-*"):
        pid = tmp.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)


def _rename(tmp: Path, folder: Path) -> None:
    """Put the finished ``tmp`` at ``folder``; where another process got there first (no flock),
    its folder is kept."""
    try:
        os.rename(tmp, folder)
    except OSError:
        if not folder.is_dir():
            raise


def build_once(base: Path, name: str, build: Callable[[Path], object]) -> Path:
    """``base / name``, made by ``build(tmp_folder)`` unless it exists. Raises ``OSError`` (the
    caller names what it was building)."""
    folder = base / name
    if folder.is_dir():
        return folder
    base.mkdir(parents=True, exist_ok=True)
    with _build_lock(base / f".{name}.lock"):
        if folder.is_dir():  # another process built it while we waited
            return folder
        _remove_stale(base, name)
        tmp = base / f".{name}.tmp-{socket.gethostname()}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            build(tmp)
            _rename(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # a failed build or a lost rename race
    return folder
