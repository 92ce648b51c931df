"""One process of the 2-process teacher-table test, run by torchrun (gloo, CPU):

    torchrun --nproc_per_node 2 tests/teacher_table_worker.py TEACHER CACHE OUT_JSON_PREFIX

Each rank records the texts its teacher embedded and the table it ended with. Rank 1 starts
late on purpose: rank 0 must wait for its shard by polling, not at a barrier.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from samu_st.models.teacher import TextTeacher
from samu_st.models.teacher_table import ShardJob
from samu_st.steps.distill import TeacherConfig, teacher_tables
from samu_st.training import TrainConfig, process_rank_and_count

TRAIN = [f"the cat {i}" for i in range(23)] + ["the cat 3", "le chat"]
DEV = ["le chat", "der hund", "the cat 5", "zwei"]


def main(teacher: str, cache: str, out: str) -> None:
    rank, world = process_rank_and_count(TrainConfig(cpu=True))  # the gloo group distill uses
    embedded: list[str] = []
    real = TextTeacher.embed

    def embed(self: TextTeacher, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
        embedded.extend(texts)
        return real(self, texts, batch_size)

    TextTeacher.embed = embed  # type: ignore[method-assign]
    if rank == 1:
        time.sleep(1.0)
    cfg = TeacherConfig(path=teacher, pooling="native", device="auto", batch_size=4)
    job = ShardJob(rank, world, timeout_s=120.0, poll_s=0.05)
    train, dev = teacher_tables(cfg, Path(cache), TRAIN, DEV, job=job)
    record = {
        "rank": rank,
        "world": world,
        "embedded": embedded,
        "train": train.embeddings.tolist(),
        "dev": dev.embeddings.tolist(),
        "train_rows": train.rows.tolist(),
        "table_file": str(train.table_file),
        "mapped": str(train.table_file) in Path("/proc/self/maps").read_text(),
    }
    Path(f"{out}-{rank}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    main(*sys.argv[1:4])
