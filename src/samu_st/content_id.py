"""Content identity of a pipeline stage's inputs: a checkpoint folder or manifests replaced
at the same path must not let ``samu-st pipeline`` reuse the stages built from the old ones.

The identity of a file is the SHA-256 of its bytes. Hashing a 1.2 GB checkpoint takes seconds,
so digests are remembered in a JSON file keyed by ``(path, size, mtime_ns)``: any rewrite
(copy, re-import, ``save_pretrained``) changes the stat and so forces a new digest. Folders
hash their files' relative names and digests; audio files are not read (a manifest names
them, and re-importing rewrites the manifest).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from pathlib import Path

from samu_st.atomic import write_text_atomic

# Bulk media a manifest folder may sit beside: identified by the manifests that list them.
SKIPPED_SUFFIXES = frozenset({".mp3", ".wav", ".flac", ".ogg", ".opus", ".m4a"})
_CHUNK = 1 << 20


def file_digest(path: Path) -> str:
    """SHA-256 of ``path``'s bytes."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


class DigestCache:
    """File digests remembered by ``(path, size, mtime_ns)`` in a JSON file (may be absent).

    Only a ``writable`` cache writes it (the main process of a multi-process job), atomically;
    the others read what is there and hash the rest themselves."""

    def __init__(self, path: Path | None, writable: bool = True) -> None:
        self.path = path
        self.writable = writable
        self._entries: dict[str, str] = {}
        self._dirty = False
        if path is not None and path.is_file():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                self._entries = {str(k): str(v) for k, v in data.items()}
            except (OSError, json.JSONDecodeError, AttributeError):
                self._entries = {}  # a damaged cache only costs re-hashing

    def digest(self, path: Path) -> str:
        st = path.stat()
        key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
        if key not in self._entries:
            self._entries[key] = file_digest(path)
            self._dirty = True
        return self._entries[key]

    def save(self) -> None:
        if self.path is None or not self._dirty or not self.writable:
            return
        text = json.dumps(self._entries, indent=0, sort_keys=True)
        write_text_atomic(self.path, text, point="input-digests")
        self._dirty = False


# A writer's temporary or moved-aside copy (samu_st.atomic), not part of what the folder holds.
_SCRATCH = re.compile(r"^\..+\.(tmp|old)-\d+$")


def _files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*")
        if p.suffix.lower() not in SKIPPED_SUFFIXES
        and p.is_file()
        and not any(_SCRATCH.match(part) for part in p.relative_to(folder).parts)
    )


def content_identity(path: str | Path, cache: DigestCache) -> str:
    """A short digest of what is at ``path`` now: ``missing``, a file's bytes, or a folder's
    file names and bytes (media files skipped, see :data:`SKIPPED_SUFFIXES`)."""
    p = Path(path)
    if p.is_file():
        return cache.digest(p)[:16]
    if not p.is_dir():
        return "missing"
    h = hashlib.sha256()
    for f in _files(p):
        h.update(f"{f.relative_to(p).as_posix()}\0{cache.digest(f)}\n".encode())
    return h.hexdigest()[:16]


def identities(paths: Iterable[str], cache: DigestCache) -> dict[str, str]:
    """``{path: content_identity}`` of each distinct path."""
    return {str(p): content_identity(p, cache) for p in dict.fromkeys(paths)}
