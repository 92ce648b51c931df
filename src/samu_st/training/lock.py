"""One run per output folder: an exclusive lock file holding the owner's PID.

The lock is an ``flock`` on ``<out_dir>/.lock``, which the kernel releases when its holder dies
(even by SIGKILL), so a lock left by a dead process is simply taken over. Where ``flock`` is not
available (some network filesystems), the PID written in the file decides: a live PID on this
host refuses, a dead one is taken over.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType

from samu_st.errors import SamuError

try:
    import fcntl
except ImportError:  # pragma: no cover - not on POSIX
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"


class FolderLockedError(SamuError):
    """The output folder is used by another live run."""


def pid_alive(pid: int) -> bool:
    """Whether a process with this PID exists (zombies count as dead)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    return True


def _read_owner(path: Path) -> dict[str, object]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


class FolderLock:
    """``with FolderLock(out_dir): ...`` — refuse if another live process holds ``out_dir``."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None

    def _refuse(self) -> FolderLockedError:
        owner = _read_owner(self.path)
        pid = owner.get("pid", "?")
        host = owner.get("host", "?")
        return FolderLockedError(
            f"{self.folder}: output folder is in use by another run (PID {pid} on {host}, "
            f"lock file {self.path}); wait for it to finish, stop it, or choose another folder"
        )

    def _try_flock(self, fd: int) -> bool:
        """True if locked, False if held by another process; falls back to PIDs if unsupported."""
        if fcntl is None:
            return self._pid_check()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return False
            return self._pid_check()  # ENOLCK / EOPNOTSUPP: no flock on this filesystem
        return True

    def _pid_check(self) -> bool:
        owner = _read_owner(self.path)
        pid = owner.get("pid")
        same_host = owner.get("host") == socket.gethostname()
        live_other = isinstance(pid, int) and pid != os.getpid() and pid_alive(pid)
        return not (same_host and live_other)

    def acquire(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        for _ in range(10):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            if not self._try_flock(fd):
                os.close(fd)
                raise self._refuse()
            # The previous holder may have unlinked the file between our open and our flock:
            # then we hold a lock on a dead inode and must retry on the new file.
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        else:
            raise FolderLockedError(f"{self.path}: could not take the lock (file keeps changing)")
        previous = _read_owner(self.path)
        if previous.get("pid") not in (None, os.getpid()):
            log.warning("%s: taking over a stale lock of dead PID %s", self.path, previous["pid"])
        owner = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(owner).encode(), 0)
        os.fsync(fd)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        # Unlink while still holding the lock, so nobody can lock the old inode after us.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> FolderLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


@contextlib.contextmanager
def locked_folder(
    folder: str | Path, is_main: bool, all_ok: Callable[[bool], bool] = bool
) -> Iterator[None]:
    """The folder lock of a (possibly multi-process) run: the main process takes it, and every
    process fails if it cannot (``all_ok(flag)`` is True everywhere iff True everywhere)."""
    lock = FolderLock(folder) if is_main else None
    error: FolderLockedError | None = None
    if lock is not None:
        try:
            lock.acquire()
        except FolderLockedError as err:
            error = err
    if not all_ok(error is None):
        raise error or FolderLockedError(f"{folder}: output folder is in use by another run")
    try:
        yield
    finally:
        if lock is not None:
            lock.release()
