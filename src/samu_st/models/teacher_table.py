"""The teacher embeddings of a text list as ONE memory-mapped ``.npy`` table, built by every
process of a job in parallel.

At paper scale (10^5-10^6 Common Voice sentences, LaBSE 471M) one process embedding everything
while the others wait at a collective barrier outlasts the process-group timeout, and every rank
then holds the whole table in RAM. Here rank ``r`` of ``w`` embeds only ``texts[r::w]`` (on its
own accelerator) into a shard file; rank 0 merges the shards into the table (written to a
temporary file, then ``os.replace``: a reader never sees half a table); every other rank polls
for the table file with its own timeout, so no collective is held while the teacher runs. All
ranks then ``np.load(mmap_mode="r")`` it: the operating system keeps one copy in the page cache.

Reuse across runs: the table is named by the SHA-256 of the teacher's cache key and the text list,
so a rerun (or a resumed run, or another run on the same data) maps it at once without loading
the teacher. The per-text SQLite :class:`EmbeddingCache` stays beside it for partial reuse, when
the text list changes (another language subset, a new dev set): ranks only read it while they
embed; rank 0 alone adds the new vectors after the merge, in one transaction, so no rank waits
on another's write lock. A shard left by a killed run of the same key and world size is reused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from samu_st.atomic import atomic_write, write_text_atomic
from samu_st.errors import SamuError
from samu_st.models.teacher import EmbeddingCache, TeacherPlan, TextTeacher

log = logging.getLogger(__name__)


class TeacherTableTimeout(SamuError):
    """A process waited longer than ``teacher.wait_timeout`` for a shard or the table."""


@dataclass(frozen=True)
class ShardJob:
    """Which share of the texts this process embeds and how long it waits for the others."""

    rank: int = 0  # this process's index in the job
    world: int = 1  # number of processes; rank r embeds texts[r::world]
    timeout_s: float = 7200.0  # longest wait for the other ranks' shards / rank 0's table
    poll_s: float = 1.0  # seconds between looks for a file another process writes

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.world:
            raise ValueError(f"rank {self.rank} not in [0, {self.world})")


ONE_PROCESS = ShardJob()


@dataclass(frozen=True)
class BuiltTable:
    """The table of one text list and how it came to be."""

    vectors: np.ndarray  # (U, D) float32, memory-mapped read-only (U = 0: in RAM)
    path: Path | None  # the .npy file (None for an empty list)
    meta: dict[str, Any]  # the table's JSON: teacher, per-rank counts
    embedded: int = 0  # texts this process embedded in this call (0: all found on disk)


def table_key(cache_key: str, texts: Sequence[str]) -> str:
    digest = hashlib.sha256(cache_key.encode("utf-8"))
    for text in texts:
        digest.update(b"\0" + text.encode("utf-8"))
    return digest.hexdigest()[:24]


def _wait_for(paths: Sequence[Path], job: ShardJob, what: str) -> None:
    start = time.monotonic()
    while missing := [p for p in paths if not p.is_file()]:
        waited = time.monotonic() - start
        if waited > job.timeout_s:
            raise TeacherTableTimeout(
                f"{missing[0]}: rank {job.rank} waited {waited:.0f} s for {what} "
                f"({len(missing)} file(s) missing; raise distill.teacher.wait_timeout if the "
                "teacher is just slow, else see the log of the rank that did not write it)"
            )
        time.sleep(job.poll_s)


def _embed_shard(
    texts: Sequence[str],
    load_teacher: Callable[[], TextTeacher],
    plan: TeacherPlan,
    cache: Path | None,
    batch_size: int,
) -> tuple[np.ndarray, np.ndarray]:
    """(n, D) vectors of ``texts`` and an (n,) mask of those embedded now (not in ``cache``)."""
    found: dict[str, np.ndarray] = {}
    if cache is not None and cache.is_file():
        with EmbeddingCache(cache, read_only=True) as db:
            found = db.get(plan.cache_key, texts)
    fresh = np.array([t not in found for t in texts], dtype=bool)
    vectors = np.zeros((len(texts), plan.dim), dtype=np.float32)
    for i, t in enumerate(texts):
        if t in found:
            vectors[i] = found[t]
    if fresh.any():
        teacher = load_teacher()
        todo = [t for t, f in zip(texts, fresh, strict=True) if f]
        vectors[fresh] = teacher.embed(todo, batch_size=batch_size).numpy()
        del teacher
    return vectors, fresh


def _merge(
    texts: Sequence[str], shards: list[Path], out: Path, meta_path: Path, meta: dict[str, Any],
    cache: Path | None, cache_key: str, dim: int,
) -> None:  # fmt: skip
    """Rank 0: shards → the table (atomically), its JSON, then the new rows into ``cache``."""
    world = len(shards)
    parts = [np.load(path) for path in shards]
    for rank, (path, part) in enumerate(zip(shards, parts, strict=True)):
        expected = (len(texts[rank::world]), dim)
        if part["vectors"].shape != expected:
            raise SamuError(f"{path}: shard of shape {part['vectors'].shape}, expected {expected}")
    meta["ranks"] = [json.loads(str(p["meta"])) for p in parts]

    def write_table(tmp: Path) -> None:
        table = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32,
                                          shape=(len(texts), dim))  # fmt: skip
        for rank, part in enumerate(parts):
            table[rank::world] = part["vectors"]
        table.flush()
        del table

    write_text_atomic(meta_path, json.dumps(meta, indent=2) + "\n", point="teacher.table_meta")
    atomic_write(out, write_table, point="teacher.table")
    if cache is not None:
        with EmbeddingCache(cache) as db:
            for rank, part in enumerate(parts):
                mine, fresh = list(texts[rank::world]), part["fresh"]
                new = [t for t, f in zip(mine, fresh, strict=True) if f]
                if new:
                    db.put(cache_key, new, torch.from_numpy(part["vectors"][fresh]))
    for path in shards:
        path.unlink(missing_ok=True)


def build_table(
    plan: TeacherPlan,
    load_teacher: Callable[[], TextTeacher],
    texts: Sequence[str],
    folder: Path,
    cache: Path | None = None,
    batch_size: int = 64,
    job: ShardJob = ONE_PROCESS,
) -> BuiltTable:
    """The (U, D) table of the distinct ``texts`` (in order) under ``folder``, every process of
    ``job`` embedding its share; ``load_teacher`` runs only where some text is not on disk."""
    if len(set(texts)) != len(texts):
        raise ValueError("build_table takes distinct texts")
    if not texts:
        return BuiltTable(np.zeros((0, plan.dim), dtype=np.float32), None, {})
    folder.mkdir(parents=True, exist_ok=True)
    key = table_key(plan.cache_key, texts)
    out, meta_path = folder / f"{key}.npy", folder / f"{key}.json"
    embedded = 0
    if not out.is_file():
        shards = [folder / f"{key}.shard-{r}-of-{job.world}.npz" for r in range(job.world)]
        mine = shards[job.rank]
        if not mine.is_file():  # else a killed run of this job already embedded this share
            share = list(texts[job.rank :: job.world])
            vectors, fresh = _embed_shard(share, load_teacher, plan, cache, batch_size)
            embedded = int(fresh.sum())
            counts = {"rank": job.rank, "texts": len(share), "embedded": embedded}
            shard = partial(_save_npz, vectors=vectors, fresh=fresh, meta=counts)
            atomic_write(mine, shard, point="teacher.shard")
            log.info("teacher shard %d/%d: %d texts, %d embedded now", job.rank, job.world,
                     len(share), embedded)  # fmt: skip
        if job.rank == 0:
            _wait_for(shards, job, "the other ranks' teacher shards")
            meta = {"key": key, "rows": len(texts), "dim": plan.dim, "world": job.world,
                    "teacher": plan.describe()}  # fmt: skip
            _merge(texts, shards, out, meta_path, meta, cache, plan.cache_key, plan.dim)
        else:
            _wait_for([out], job, "rank 0's merged teacher table")
    meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {}
    vectors = np.load(out, mmap_mode="r")
    if vectors.shape != (len(texts), plan.dim):
        raise SamuError(f"{out}: table of shape {vectors.shape}, expected {(len(texts), plan.dim)}")
    return BuiltTable(vectors, out, meta, embedded)


def _save_npz(path: Path, vectors: np.ndarray, fresh: np.ndarray, meta: dict[str, Any]) -> None:
    with path.open("wb") as handle:  # np.savez appends ".npz" to a name, not to an open file
        np.savez(handle, vectors=vectors, fresh=fresh, meta=np.array(json.dumps(meta)))
