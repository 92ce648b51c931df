"""Capture what C libraries print to file descriptor 2 during a call.

libsndfile decodes mp3 with mpg123, which prints ``Note: Illegal Audio-MPEG-Header ...`` and
``[src/libmpg123/parse.c:...] error: ...`` to the process's stderr itself, past Python's
``sys.stderr``: a corpus with a few damaged clips fills the console with it, between the
progress bars. :func:`capture_c_stderr` points fd 2 at a temporary file for the length of a
block and hands back what was written there.

fd 2 belongs to the whole process, so captures are serialised by one lock (threads that decode
in parallel wait for each other only during the C call), and a fork waits until a capture ends
(a child forked meanwhile would keep the redirected fd 2). Other threads may write to fd 2
while it is redirected (a log line, a traceback, a progress bar): lines that do not look like
decoder messages (:data:`DECODER_LINE`) are written back to the real stderr after the block.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import IO

# mpg123's messages: "Note: ...", "Warning: ...", "[src/libmpg123/parse.c:f():12] error: ...".
DECODER_LINE = re.compile(
    r"^(?:Note|Warning|Error): |^\[[^\]]*\] (?:error|warning|note)\b|mpg123", re.IGNORECASE
)

_LOCK = threading.Lock()
_sink: IO[bytes] | None = None  # reused between captures: truncated at each start


@dataclass
class Captured:
    """What a :func:`capture_c_stderr` block's C code printed; filled when the block ends."""

    text: str = ""  # decoder lines (DECODER_LINE), as printed


def _sink_fd() -> int:
    global _sink
    if _sink is None:
        # kept open for the process: every capture reuses it
        _sink = tempfile.TemporaryFile(prefix="samu-st-stderr-")  # noqa: SIM115
    fd = _sink.fileno()
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _read_back(fd: int) -> str:
    size = os.fstat(fd).st_size
    os.lseek(fd, 0, os.SEEK_SET)
    data = os.read(fd, size) if size else b""
    return data.decode("utf-8", errors="replace")


def _flush_python_stderr() -> None:
    """Python's own buffered text goes out before fd 2 moves (and after it is back)."""
    if sys.stderr is not None:
        with suppress(OSError, ValueError):  # closed or detached: nothing to keep
            sys.stderr.flush()


def _split(text: str) -> tuple[str, str]:
    """``(decoder lines, other lines)`` of captured text, each in the order printed."""
    mine: list[str] = []
    other: list[str] = []
    for line in text.splitlines(keepends=True):
        (mine if DECODER_LINE.search(line) else other).append(line)
    return "".join(mine), "".join(other)


@contextmanager
def capture_c_stderr() -> Iterator[Captured]:
    """Redirect fd 2 to a temporary file during the block; the :class:`Captured` it yields
    holds the decoder lines printed meanwhile once the block ends, also when it raises (the
    exception propagates unchanged). Without a usable fd 2 nothing is redirected."""
    captured = Captured()
    with _LOCK:
        _flush_python_stderr()
        try:
            saved = os.dup(2)
        except OSError:  # no fd 2 (a daemon): nothing to capture
            yield captured
            return
        try:
            sink = _sink_fd()
            os.dup2(sink, 2)
        except OSError:
            os.close(saved)
            yield captured
            return
        try:
            yield captured
        finally:
            _flush_python_stderr()
            os.dup2(saved, 2)
            os.close(saved)
            captured.text, other = _split(_read_back(sink))
            if other:  # another thread's output, not the decoder's: where it was going
                with suppress(OSError):
                    os.write(2, other.encode("utf-8"))


def _reset_in_child() -> None:
    global _sink
    _sink = None  # the parent's file: a child shares its offset, so it opens its own
    _LOCK.release()


if hasattr(os, "register_at_fork"):  # POSIX: a fork never happens in the middle of a capture
    os.register_at_fork(
        before=_LOCK.acquire, after_in_parent=_LOCK.release, after_in_child=_reset_in_child
    )
