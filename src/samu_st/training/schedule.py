"""Optimiser construction and fairseq's tri-stage learning-rate schedule.

The schedule is a *multiplier* of each param group's own peak LR (a ``LambdaLR`` lambda), so
groups with different peak LRs (a pooling head and an encoder, say) follow the same shape.
Semantics follow ``fairseq/optim/lr_scheduler/tri_stage_lr_scheduler.py`` exactly, where the
LR after ``n`` updates is::

    n <  W              init + (peak - init) / W * n          (linear warm-up)
    n <  W + H          peak                                  (hold)
    n <= W + H + D      peak * exp(-log(1 / final_scale) / D * (n - W - H))   (decay)
    otherwise           final_scale * peak                    (constant)

with ``init = init_lr_scale * peak``. ``LambdaLR`` evaluates the lambda at ``n = 0`` when it is
built and at ``n`` after its ``n``-th ``step()``, matching fairseq's ``step_update(num_updates)``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from samu_st.errors import ConfigError
from samu_st.training.config import OptimConfig, ScheduleConfig

ParamGroup = dict[str, Any]


@dataclass(frozen=True)
class TriStage:
    """LR multiplier after ``n`` updates (a ``LambdaLR`` lambda; picklable, no closures)."""

    warmup_steps: int
    hold_steps: int
    decay_steps: int
    init_lr_scale: float
    final_lr_scale: float

    @property
    def decay_factor(self) -> float:
        # fairseq divides by decay_steps unconditionally; with no decay phase the factor is
        # irrelevant (the decay phase is the single step n == W + H, at the peak).
        if self.decay_steps == 0:
            return 0.0
        return -math.log(self.final_lr_scale) / self.decay_steps

    def __call__(self, n: int) -> float:
        w, h, d = self.warmup_steps, self.hold_steps, self.decay_steps
        if n < w:
            return self.init_lr_scale + (1.0 - self.init_lr_scale) / w * n
        if n < w + h:
            return 1.0
        if n <= w + h + d:
            return math.exp(-self.decay_factor * (n - w - h))
        return self.final_lr_scale


def tri_stage(cfg: ScheduleConfig, max_steps: int) -> TriStage:
    """Phase lengths from ``phase_ratio`` (``int(max_steps * r)``, as fairseq) or explicit steps."""
    if cfg.phase_ratio is not None:
        w, h, d = (int(max_steps * r) for r in cfg.phase_ratio)
    else:
        w, h, d = cfg.warmup_steps, cfg.hold_steps, cfg.decay_steps
    if w + h + d <= 0:
        raise ConfigError("schedule: the three phases are all empty; set phase_ratio or *_steps")
    return TriStage(w, h, d, cfg.init_lr_scale, cfg.final_lr_scale)


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, max_steps: int
) -> LambdaLR:
    """A ``LambdaLR`` applying the tri-stage multiplier to every group's peak LR."""
    return LambdaLR(optimizer, tri_stage(cfg, max_steps))


def default_param_groups(model: nn.Module, cfg: OptimConfig) -> list[ParamGroup]:
    """One group with every trainable parameter, at the config's peak LR."""
    del cfg  # the optimizer defaults already come from it
    params = [p for p in model.parameters() if p.requires_grad]
    return [{"name": "all", "params": params}]


def check_param_groups(model: nn.Module, groups: Iterable[ParamGroup]) -> list[ParamGroup]:
    """Keep only parameters that require grad; every trainable parameter in exactly one group.

    A trainable parameter left out of all groups would silently never train, so it is an error,
    as is a parameter listed twice. Groups left empty (all their parameters frozen) are dropped.
    """
    names = {id(p): n for n, p in model.named_parameters()}
    seen: set[int] = set()
    checked: list[ParamGroup] = []
    for i, group in enumerate(groups):
        params = [p for p in group["params"] if p.requires_grad]
        for p in params:
            if id(p) not in names:
                raise ConfigError(f"param group {i}: holds a parameter that is not in the model")
            if id(p) in seen:
                raise ConfigError(f"param group {i}: parameter {names[id(p)]} is in two groups")
            seen.add(id(p))
        if params:
            checked.append({**group, "params": params})
    missing = [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in seen]
    if missing:
        raise ConfigError(
            f"trainable parameter(s) in no param group: {', '.join(missing[:5])}"
            + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        )
    if not checked:
        raise ConfigError("the model has no trainable parameter")
    return checked


def build_optimizer(groups: list[ParamGroup], cfg: OptimConfig) -> torch.optim.Optimizer:
    """Adam or AdamW over ``groups``; a group's own ``lr``/``weight_decay`` override the config."""
    kwargs: dict[str, Any] = {
        "lr": cfg.lr,
        "betas": cfg.betas,
        "eps": cfg.eps,
        "weight_decay": cfg.weight_decay,
    }
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, **kwargs)
    return torch.optim.Adam(groups, **kwargs)
