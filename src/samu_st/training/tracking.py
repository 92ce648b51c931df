"""Run logging: a JSON-lines log, tensorboard scalars and a progress bar (main process only).

Named ``tracking`` so that it does not shadow the standard ``logging`` module.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from samu_st.atomic import write_text_atomic
from samu_st.config import save_config

log = logging.getLogger(__name__)

JSONL = "train_log.jsonl"
TENSORBOARD = "tensorboard"
CONFIG_NAME = "config.yaml"


@dataclass
class Window:
    """Sums over the updates since the last log record (already summed over processes)."""

    loss_sum: float = 0.0  # sum of finite micro-batch losses of applied updates
    loss_n: float = 0.0  # their count
    grad_norm_sum: float = 0.0
    updates: int = 0  # applied updates
    audio_seconds: float = 0.0  # all consumed micro-batches, skipped updates included
    padding_sum: float = 0.0
    batches: float = 0.0
    items: float = 0.0
    wall: float = 0.0  # seconds spent in updates (data loading included, checkpoints not)
    metrics: dict[str, float] = field(default_factory=dict)  # task metrics, summed per update

    def record(self, step: int, epoch: int, lr: dict[str, float]) -> dict[str, Any]:
        """The ``train`` log record of this window."""
        record: dict[str, Any] = {
            "kind": "train",
            "step": step,
            "epoch": epoch,
            "loss": self.loss_sum / max(self.loss_n, 1.0),
            "lr": lr,
            "grad_norm": self.grad_norm_sum / max(self.updates, 1),
            "audio_sec_per_sec": self.audio_seconds / self.wall if self.wall > 0 else 0.0,
            "padding": self.padding_sum / max(self.batches, 1.0),
            "items": self.items,
        }
        record.update({k: v / max(self.updates, 1) for k, v in self.metrics.items()})
        return record


def write_config(out_dir: Path, obj: Any, resumed_from: int | None) -> None:
    """The fully resolved config beside the checkpoints; on resume, a changed one is kept apart."""
    path = out_dir / CONFIG_NAME
    if resumed_from is None or not path.exists():
        save_config(obj, path)
        return
    new = out_dir / f".tmp-{CONFIG_NAME}"
    save_config(obj, new)
    if new.read_text(encoding="utf-8") == path.read_text(encoding="utf-8"):
        new.unlink()
        return
    changed = out_dir / f"config.resume-{resumed_from}.yaml"
    new.replace(changed)
    log.warning("%s: the config differs from the run's %s; resume may not be exact", changed, path)


def trim_jsonl(path: Path, max_step: int) -> None:
    """Drop records after ``max_step`` (they are redone after a resume); atomic rewrite."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line cut by a crash
        if isinstance(record, dict) and record.get("step", 0) <= max_step:
            kept.append(line)
    text = "".join(f"{line}\n" for line in kept)
    write_text_atomic(path, text, point="train_log.trim")


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """All records of a JSON-lines log."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    return value


class RunLogger:
    """Writes records ``{"step": n, "kind": "train"|"val", ...}`` to every enabled sink.

    Scalars are written to tensorboard as ``<kind>/<key>``; a dict value (e.g. the learning rate
    per param group) becomes ``<kind>/<key>/<name>``.
    """

    def __init__(
        self,
        out_dir: Path,
        enabled: bool,
        tensorboard: bool,
        progress: bool,
        total_steps: int,
        start_step: int,
    ) -> None:
        self.enabled = enabled
        self.path = out_dir / JSONL
        self._writer: Any = None
        # Records after the starting step were left by a run that died after its last
        # checkpoint (or before its first): they are redone, so they go.
        if enabled:
            trim_jsonl(self.path, start_step)
        if enabled and tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # slow import; only when used

            # purge_step hides the events of those redone steps in tensorboard
            purge = start_step + 1
            self._writer = SummaryWriter(str(out_dir / TENSORBOARD), purge_step=purge)
        show = enabled and progress and sys.stderr.isatty()
        self.bar = tqdm(
            total=total_steps, initial=start_step, disable=not show, dynamic_ncols=True, unit="upd"
        )
        # Off a terminal (a piped `make demo`, a cluster job's log) the bar is invisible:
        # a log line at every tenth of the run instead.
        self._lines = enabled and progress and not show
        self._total = total_steps
        self._next_line = start_step + max(1, total_steps // 10)

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(_json_safe(record)) + "\n")
        if self._writer is not None:
            self._tensorboard(record)
        if record.get("kind") == "train" and "loss" in record:
            self.bar.set_postfix(loss=f"{record['loss']:.4g}", refresh=False)
            step = int(record.get("step", 0))
            if self._lines and step >= self._next_line:
                log.info("update %d/%d  loss %.4g", step, self._total, record["loss"])
                self._next_line = step + max(1, self._total // 10)

    def _tensorboard(self, record: dict[str, Any]) -> None:
        kind, step = record.get("kind", "train"), int(record["step"])
        for key, value in record.items():
            if key in ("step", "kind"):
                continue
            if isinstance(value, dict):
                for name, v in value.items():
                    if isinstance(v, (int, float)):
                        self._writer.add_scalar(f"{kind}/{key}/{name}", v, step)
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                self._writer.add_scalar(f"{kind}/{key}", value, step)

    def advance(self, n: int = 1) -> None:
        self.bar.update(n)

    def close(self) -> None:
        self.bar.close()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
