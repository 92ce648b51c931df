"""A tiny classification task for the training-loop tests, runnable as a script.

The toy has every kind of randomness a real step has, so that exact-resume tests really test
something: dropout (torch RNG), input noise drawn in ``__getitem__`` from torch, numpy and
python RNGs, and a shuffling per-rank batch sampler. Part of the model is frozen, so DDP runs
with frozen parameters.

    python tests/toy_train.py OUT --steps 30 --save-every 7 [--resume] [--batch-size 8] ...
    torchrun --nproc_per_node 2 tests/toy_train.py OUT ...   (the batch size is GLOBAL)
"""

from __future__ import annotations

import argparse
import json
import random
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from samu_st.training import LossOutput, TaskBase, TrainConfig, process_rank_and_count, train
from samu_st.training.config import OptimConfig, ScheduleConfig

DIM, CLASSES = 8, 4


class ToyDataset(torch.utils.data.Dataset[dict[str, Any]]):
    """``n`` fixed points labelled by a fixed random linear teacher; noisy on every read."""

    def __init__(self, n: int = 44, noise: float = 0.05) -> None:
        g = torch.Generator().manual_seed(1234)
        self.x = torch.randn(n, DIM, generator=g)
        teacher = torch.randn(DIM, CLASSES, generator=g)
        self.y = (self.x @ teacher).argmax(-1)
        self.lengths = torch.randint(50, 100, (n,), generator=g)  # fake frames, for padding
        self.noise = noise

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, Any]:
        jitter = self.noise * (torch.randn(DIM) + float(np.random.randn()) + random.random())
        return {"x": self.x[i] + jitter, "y": self.y[i], "length": int(self.lengths[i])}


def collate(items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    return {
        "x": torch.stack([it["x"] for it in items]),  # (B, DIM)
        "y": torch.stack([it["y"] for it in items]),  # (B,)
        "lengths": torch.tensor([it["length"] for it in items]),  # (B,) frames
    }


class ToySampler:
    """Shuffled global batches of ``batch_size``; rank ``r`` takes items ``r::world_size``."""

    def __init__(
        self, n: int, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1
    ) -> None:
        if batch_size % world_size:
            raise ValueError("the global batch size must divide by the number of processes")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Any:
        g = torch.Generator().manual_seed(self.seed * 10_000 + self.epoch)
        order = torch.randperm(self.n, generator=g).tolist()
        for start in range(0, self.n - self.batch_size + 1, self.batch_size):
            yield order[start : start + self.batch_size][self.rank :: self.world_size]

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "epoch": self.epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seed, self.epoch = int(state["seed"]), int(state["epoch"])


class ToyModel(nn.Module):
    """A frozen random projection (a stand-in for a frozen encoder), then a trainable MLP."""

    def __init__(self, dropout: float = 0.1, hidden: int = 32) -> None:
        super().__init__()
        self.frozen = nn.Linear(DIM, hidden)
        self.frozen.requires_grad_(False)
        self.head = nn.Sequential(
            nn.Linear(hidden, hidden), nn.Tanh(), nn.Dropout(dropout), nn.Linear(hidden, CLASSES)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, DIM) → logits (B, CLASSES)."""
        return self.head(torch.tanh(self.frozen(x)))


class ToyTask(TaskBase):
    """Cross-entropy; two param groups (first and last head layer) with different peak LRs."""

    def __init__(self, step_sleep: float = 0.0) -> None:
        self.step_sleep = step_sleep
        self.steps_seen: list[int] = []

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> LossOutput:
        logits = model(batch["x"])
        loss = nn.functional.cross_entropy(logits.float(), batch["y"])
        acc = float((logits.argmax(-1) == batch["y"]).float().mean())
        return LossOutput(loss, len(batch["y"]), {"accuracy": acc})

    def param_groups(self, model: nn.Module, cfg: OptimConfig) -> list[dict[str, Any]]:
        head = model.head
        return [
            {"name": "first", "params": list(head[0].parameters()), "lr": cfg.lr * 0.5},
            {"name": "last", "params": list(head[3].parameters())},
            {"name": "frozen", "params": list(model.frozen.parameters())},  # filtered out
        ]

    def batch_seconds(self, batch: dict[str, torch.Tensor]) -> float:
        return float(batch["lengths"].sum()) * 0.02  # 20 ms frames

    def batch_padding(self, batch: dict[str, torch.Tensor]) -> float:
        lengths = batch["lengths"]
        return 1.0 - float(lengths.sum()) / (len(lengths) * int(lengths.max()))

    def validate(self, model: nn.Module, loader: Any) -> dict[str, float]:
        correct = total = 0
        device = next(model.parameters()).device
        for batch in loader:
            x, y = batch["x"].to(device), batch["y"].to(device)
            correct += int((model(x).argmax(-1) == y).sum())
            total += len(y)
        torch.rand(3)  # validation may use RNG: the loop must shield training from it
        return {"accuracy": correct / total}

    def on_step(self, step: int) -> None:
        self.steps_seen.append(step)
        if self.step_sleep:
            time.sleep(self.step_sleep)


def toy_config(steps: int = 30, **overrides: Any) -> TrainConfig:
    cfg = TrainConfig(
        max_steps=steps,
        log_every=1,
        save_every=1000,
        keep_last=2,
        tensorboard=False,
        progress_bar=False,
        seed=3,
        # the CPU, also on a GPU machine: the toy tests pin CPU numbers (tests/test_gpu.py
        # trains the toy on the GPU with cpu=False)
        cpu=True,
        optim=OptimConfig(lr=1e-2, clip_norm=5.0),
        schedule=ScheduleConfig(phase_ratio=(0.1, 0.5, 0.4)),
    )
    return replace(cfg, **overrides)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out", type=Path)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--save-every", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=8, help="global batch size")
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--noise", type=float, default=0.05)
    p.add_argument("--step-sleep", type=float, default=0.0)
    p.add_argument("--resume", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(1)
    cfg = toy_config(args.steps, save_every=args.save_every, grad_accum=args.grad_accum)
    rank, world = process_rank_and_count(cfg)
    torch.manual_seed(0)  # same initial weights everywhere
    model = ToyModel(args.dropout)
    data = ToyDataset(noise=args.noise)
    sampler = ToySampler(len(data), args.batch_size, seed=5, rank=rank, world_size=world)
    result = train(ToyTask(args.step_sleep), model, data, collate, sampler, cfg, args.out,
                   resume=args.resume)  # fmt: skip
    if rank == 0:
        summary = {
            "step": result.step,
            "resumed_from": result.resumed_from,
            "losses": [r["loss"] for r in result.history],
            "world_size": world,
        }
        (args.out / "result.json").write_text(json.dumps(summary))


if __name__ == "__main__":
    main()
