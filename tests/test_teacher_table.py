"""The teacher table at scale (issue 14, defect 6): every process embeds its share of the distinct
texts, one memory-mapped table on disk, no barrier held while the teacher runs, reuse across
runs without loading the teacher."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

from samu_st.models.teacher import EmbeddingCache, TextTeacher
from samu_st.models.teacher_table import ShardJob, TeacherTableTimeout
from samu_st.steps.distill import TeacherConfig, TeacherTable, teacher_tables
from standins.labse import write_labse
from teacher_table_worker import DEV, TRAIN
from test_ddp import torchrun

WORKER = Path(__file__).with_name("teacher_table_worker.py")


@pytest.fixture(scope="module")
def labse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_labse(tmp_path_factory.mktemp("labse"))


def config(labse: Path) -> TeacherConfig:
    return TeacherConfig(path=str(labse), pooling="native", device="cpu", batch_size=4)


@pytest.fixture
def embedded(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every text any teacher embeds in this process."""
    seen: list[str] = []
    real = TextTeacher.embed

    def embed(self: TextTeacher, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
        seen.extend(texts)
        return real(self, texts, batch_size)

    monkeypatch.setattr(TextTeacher, "embed", embed)
    return seen


def mapped_range(path: Path) -> list[tuple[int, int]]:
    """Address ranges where this process maps ``path`` (Linux /proc/self/maps)."""
    spans = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        if line.endswith(str(path)):
            start, end = line.split()[0].split("-")
            spans.append((int(start, 16), int(end, 16)))
    return spans


def expected(labse: Path, texts: list[str]) -> torch.Tensor:
    return TextTeacher.from_folder(labse, "native").embed(texts)


def test_one_process_table_is_memory_mapped_and_reused(
    labse: Path, tmp_path: Path, embedded: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "teacher_embeddings.sqlite"
    train, dev = teacher_tables(config(labse), cache, TRAIN, DEV)
    assert sorted(embedded) == sorted(set(TRAIN) | set(DEV))  # each distinct text once
    unique = list(dict.fromkeys(TRAIN))
    assert train.texts == unique and dev.texts == DEV
    torch.testing.assert_close(train.embeddings, expected(labse, unique), atol=1e-5, rtol=0)
    torch.testing.assert_close(dev.embeddings, expected(labse, DEV), atol=1e-5, rtol=0)
    assert torch.equal(train.embeddings[train.rows[-2]], train.embeddings[3])  # "the cat 3"
    # the training table is a view of the file's pages, not a private copy
    assert train.table_file is not None and train.table_file.suffix == ".npy"
    address = train.embeddings.data_ptr()
    assert any(a <= address < b for a, b in mapped_range(train.table_file))
    assert train.teacher["summary"] == "cls + dense(tanh) + normalize"

    def no_teacher(*args: object, **kwargs: object) -> None:
        raise AssertionError("the teacher was loaded although the table is on disk")

    monkeypatch.setattr(TextTeacher, "from_folder", no_teacher)
    again = teacher_tables(config(labse), cache, TRAIN, DEV)
    assert torch.equal(again[0].embeddings, train.embeddings)


def test_a_new_text_list_reuses_the_cached_vectors(
    labse: Path, tmp_path: Path, embedded: list[str]
) -> None:
    cache = tmp_path / "c.sqlite"
    teacher_tables(config(labse), cache, TRAIN[:10])
    with EmbeddingCache(cache) as db:
        assert db.count() == 10  # rank 0 stored the new vectors after the merge
    embedded.clear()
    (table,) = teacher_tables(config(labse), cache, TRAIN[5:15])
    assert embedded == TRAIN[10:15]  # another list (new table file), only new texts embedded
    torch.testing.assert_close(table.embeddings, expected(labse, TRAIN[5:15]), atol=1e-5, rtol=0)


def test_waiting_for_a_missing_rank_times_out_naming_the_file(
    labse: Path, tmp_path: Path, embedded: list[str]
) -> None:
    cache = tmp_path / "c.sqlite"
    merging = ShardJob(rank=0, world=2, timeout_s=0.3, poll_s=0.05)
    with pytest.raises(TeacherTableTimeout, match=r"shard-1-of-2\.npz: rank 0 waited"):
        teacher_tables(config(labse), cache, TRAIN, job=merging)
    waiting = ShardJob(rank=1, world=2, timeout_s=0.3, poll_s=0.05)
    with pytest.raises(TeacherTableTimeout, match=r"\.npy: rank 1 waited .* rank 0's merged"):
        teacher_tables(config(labse), cache, TRAIN, job=waiting)
    unique = list(dict.fromkeys(TRAIN))
    assert embedded == unique[0::2] + unique[1::2]  # each rank its share, once
    # both shards are on disk now (written atomically): a rerun of rank 0 merges them
    (table,) = teacher_tables(config(labse), cache, TRAIN, job=merging)
    assert len(embedded) == len(unique)  # nothing embedded again
    torch.testing.assert_close(table.embeddings, expected(labse, unique), atol=1e-5, rtol=0)
    assert not list(cache.with_suffix(".tables").glob("*.npz"))  # shards removed after merge


def test_two_processes_each_embed_their_share(labse: Path, tmp_path: Path) -> None:
    cmd = [*torchrun(), str(WORKER),
           str(labse), str(tmp_path / "ddp" / "cache.sqlite"), str(tmp_path / "rank")]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    ranks = [json.loads((tmp_path / f"rank-{r}.json").read_text()) for r in (0, 1)]
    union = list(dict.fromkeys([*TRAIN, *DEV]))
    single: list[TeacherTable] = teacher_tables(
        config(labse), tmp_path / "one" / "cache.sqlite", TRAIN, DEV
    )
    for record in ranks:
        assert record["world"] == 2 and record["mapped"]
        assert record["embedded"] == union[record["rank"] :: 2]  # its share, nothing else
        np.testing.assert_allclose(record["train"], single[0].embeddings.numpy(), atol=1e-5)
        np.testing.assert_allclose(record["dev"], single[1].embeddings.numpy(), atol=1e-5)
        assert record["train_rows"] == single[0].rows.tolist()
    assert ranks[0]["table_file"] == ranks[1]["table_file"]  # one table for the job
    meta = json.loads(Path(ranks[0]["table_file"]).with_suffix(".json").read_text())
    counts = {r["rank"]: r["embedded"] for r in meta["ranks"]}
    assert counts == {0: len(union[0::2]), 1: len(union[1::2])}
    assert meta["teacher"]["summary"] == "cls + dense(tanh) + normalize"
