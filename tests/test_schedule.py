import io
import math

import pytest
import torch
from torch import nn

from samu_st.config import from_dict
from samu_st.errors import ConfigError
from samu_st.training.config import OptimConfig, ScheduleConfig, TrainConfig, resolve_precision
from samu_st.training.schedule import (
    build_optimizer,
    build_scheduler,
    check_param_groups,
    tri_stage,
)


def fairseq_lr(n: int, peak: float, w: int, h: int, d: int, init: float, final: float) -> float:
    """fairseq's TriStageLRSchedule.step_update(n), in absolute LR, written out independently."""
    init_lr, final_lr = init * peak, final * peak
    if n < w:
        return init_lr + (peak - init_lr) / w * n
    if n < w + h:
        return peak
    if n <= w + h + d:
        return peak * math.exp(math.log(final) / d * (n - w - h))
    return final_lr


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (0, 0.01),  # warm-up starts at init_lr_scale
        (5, 0.01 + 0.99 / 10 * 5),  # = 0.505, linear
        (9, 0.01 + 0.99 / 10 * 9),  # last warm-up step, still below the peak
        (10, 1.0),  # hold starts
        (49, 1.0),  # last hold step
        (50, 1.0),  # first decay step is exp(0)
        (75, 0.1),  # halfway through decay: exp(-ln(100) / 2)
        (100, 0.01),  # decay ends exactly at final_lr_scale
        (101, 0.01),  # then constant
        (10_000, 0.01),
    ],
)
def test_tri_stage_phase_boundaries(n: int, expected: float) -> None:
    sched = tri_stage(ScheduleConfig(phase_ratio=(0.1, 0.4, 0.5)), max_steps=100)
    assert (sched.warmup_steps, sched.hold_steps, sched.decay_steps) == (10, 40, 50)
    assert sched(n) == pytest.approx(expected, rel=1e-12)


def test_phase_lengths_truncate_like_fairseq() -> None:
    sched = tri_stage(ScheduleConfig(phase_ratio=(0.1, 0.4, 0.5)), max_steps=15)
    assert (sched.warmup_steps, sched.hold_steps, sched.decay_steps) == (1, 6, 7)


def test_explicit_steps_and_scales() -> None:
    cfg = ScheduleConfig(
        phase_ratio=None, warmup_steps=0, hold_steps=0, decay_steps=4, final_lr_scale=1 / 16
    )
    sched = tri_stage(cfg, max_steps=999)
    assert [sched(n) for n in range(6)] == pytest.approx([1, 0.5, 0.25, 0.125, 0.0625, 0.0625])
    # no decay phase: the single step W+H is at the peak, then the final LR (fairseq's <=)
    flat = tri_stage(ScheduleConfig(phase_ratio=None, warmup_steps=2), max_steps=10)
    assert [flat(n) for n in range(4)] == pytest.approx([0.01, 0.505, 1.0, 0.01])


def test_lambda_lr_matches_fairseq_per_group() -> None:
    a, b = nn.Linear(2, 2), nn.Linear(2, 1)
    groups = [{"params": a.parameters(), "lr": 2e-3}, {"params": b.parameters()}]
    opt = build_optimizer(list(groups), OptimConfig(lr=1e-3))
    cfg = ScheduleConfig(phase_ratio=(0.2, 0.3, 0.5), init_lr_scale=0.05, final_lr_scale=0.02)
    sched = build_scheduler(opt, cfg, max_steps=40)
    for n in range(50):
        for group, peak in zip(opt.param_groups, (2e-3, 1e-3), strict=True):
            assert group["lr"] == pytest.approx(
                fairseq_lr(n, peak, 8, 12, 20, 0.05, 0.02), rel=1e-12
            ), n
        opt.step()
        sched.step()


def test_scheduler_state_is_weights_only_loadable() -> None:
    opt = build_optimizer([{"params": nn.Linear(2, 2).parameters()}], OptimConfig())
    sched = build_scheduler(opt, ScheduleConfig(), max_steps=10)
    for _ in range(3):
        opt.step()
        sched.step()
    buf = io.BytesIO()
    torch.save(sched.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    assert state["last_epoch"] == 3


def test_bad_schedule_configs() -> None:
    with pytest.raises(ConfigError, match="summing to 1"):
        ScheduleConfig(phase_ratio=(0.5, 0.5, 0.5))
    with pytest.raises(ConfigError, match="final_lr_scale"):
        ScheduleConfig(final_lr_scale=0.0)
    with pytest.raises(ConfigError, match="all empty"):
        tri_stage(ScheduleConfig(phase_ratio=None), max_steps=10)
    with pytest.raises(ConfigError, match="summing to 1"):
        from_dict(TrainConfig, {"schedule": {"phase_ratio": [0.1, 0.1, 0.1]}})


def test_train_config_from_yaml_data() -> None:
    cfg = from_dict(
        TrainConfig,
        {"max_steps": 7, "optim": {"name": "adam", "betas": [0.9, 0.999]}, "cpu_bf16": True},
    )
    assert cfg.optim.betas == (0.9, 0.999) and cfg.optim.name == "adam"
    assert resolve_precision(cfg, on_gpu=False) == "bf16"
    assert resolve_precision(TrainConfig(), on_gpu=False) == "no"  # fp32 on CPU by default
    assert resolve_precision(TrainConfig(mixed_precision="fp16"), on_gpu=True) == "fp16"
    assert resolve_precision(TrainConfig(mixed_precision="fp16", cpu_bf16=True), False) == "no"
    with pytest.raises(ConfigError, match=r"train\.grad_accum"):
        TrainConfig(grad_accum=0)


def test_param_groups_checked() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    model[0].requires_grad_(False)
    groups = check_param_groups(model, [{"params": list(model.parameters()), "lr": 1.0}])
    assert len(groups[0]["params"]) == 2  # frozen ones dropped
    with pytest.raises(ConfigError, match=r"in no param group: 1\.weight"):
        check_param_groups(model, [{"params": [model[1].bias]}])
    with pytest.raises(ConfigError, match="in two groups"):
        check_param_groups(model, [{"params": [model[1].bias]}, {"params": [model[1].bias]}])
