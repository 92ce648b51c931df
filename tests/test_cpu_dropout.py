"""samu_st.models.cpu_dropout: dropout from 16-bit lanes of 64-bit random integers drops each
element independently with probability p (every lane position alike), scales the kept ones,
back-propagates through the same mask, is reproducible from the seed, and stands in for
``nn.Dropout`` modules only inside the block; the training loop uses it on a CPU
(``train.cpu_dropout: fast``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from samu_st.models.cpu_dropout import (
    cpu_dropout,
    dropout_modules,
    fast_dropout_modules,
    keep_mask,
    quantised_p,
)

pytestmark = pytest.mark.usefixtures("one_thread")

N = 1 << 20


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_each_lane_drops_with_probability_p(p: float) -> None:
    torch.manual_seed(0)
    keep = keep_mask(torch.Size([N]), p, torch.device("cpu"))
    assert keep.dtype == torch.bool
    sd = (p * (1 - p) / (N // 4)) ** 0.5
    # each of the four 16-bit lanes of a 64-bit draw (a lane stuck at a sign would show here)
    for lane in range(4):
        dropped = 1.0 - keep[lane::4].float().mean().item()
        assert abs(dropped - quantised_p(p)) < 6 * sd, (lane, dropped)
    # neighbours are independent: P(both dropped) = p²
    both = (~keep[:-1] & ~keep[1:]).float().mean().item()
    assert abs(both - p * p) < 6 * (p * p * (1 - p * p) / N) ** 0.5 + 1e-3


def test_values_scale_and_gradient() -> None:
    torch.manual_seed(1)
    x = torch.randn(64, 300, dtype=torch.float64, requires_grad=True)
    out = cpu_dropout(x, 0.1)
    kept = out != 0
    scale = 1.0 / (1.0 - quantised_p(0.1))
    assert quantised_p(0.1) == pytest.approx(0.1, abs=1e-5)
    torch.testing.assert_close(out[kept], x.detach()[kept] * scale)
    weights = torch.randn_like(out)
    (out * weights).sum().backward()
    assert x.grad is not None
    torch.testing.assert_close(x.grad, weights * kept * scale)
    # the expectation is kept: E[dropout(1)] = 1 (seeded: the same draw every run)
    torch.manual_seed(2)
    ones = cpu_dropout(torch.ones(N), 0.3)
    assert ones.mean().item() == pytest.approx(1.0, abs=6 * (0.3 / 0.7 / N) ** 0.5)


def test_bf16_and_shapes() -> None:
    x = torch.randn(3, 5, 7, dtype=torch.bfloat16)
    out = cpu_dropout(x, 0.2)
    assert out.dtype == torch.bfloat16 and out.shape == x.shape
    odd = torch.randn(5, 3).t()  # not contiguous, numel not a multiple of 4
    assert cpu_dropout(odd, 0.5).shape == (3, 5)


def test_reproducible_from_the_seed() -> None:
    x = torch.ones(4096)
    torch.manual_seed(7)
    a = cpu_dropout(x, 0.1)
    torch.manual_seed(7)
    b = cpu_dropout(x, 0.1)
    torch.manual_seed(8)
    c = cpu_dropout(x, 0.1)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_identity_and_pytorch_cases() -> None:
    x = torch.randn(10)
    assert cpu_dropout(x, 0.1, training=False) is x
    assert cpu_dropout(x, 0.0) is x
    assert torch.equal(cpu_dropout(x, 1.0), torch.zeros(10))
    meta = torch.empty(8, device="meta")  # another device: PyTorch's own dropout
    assert cpu_dropout(meta, 0.1).device.type == "meta"


def test_modules_stand_in_only_inside_the_block() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5), nn.Dropout2d(0.5), nn.Dropout(0.1))
    assert dropout_modules(model) == [model[1], model[3]]  # not the channel dropout
    x = torch.ones(2, 4)
    with fast_dropout_modules(model) as n:
        assert n == 2 and "forward" in model[1].__dict__
        assert "forward" not in model[2].__dict__
        torch.manual_seed(3)
        out = model[1](torch.ones(N))
        assert (out == 0).float().mean().item() == pytest.approx(0.5, abs=0.005)
        model.eval()
        assert torch.equal(model[1](x), x)  # eval: the module's own forward
        model.train()
    assert "forward" not in model[1].__dict__
    with pytest.raises(RuntimeError), fast_dropout_modules(model):
        raise RuntimeError("boom")
    assert "forward" not in model[1].__dict__


def test_the_training_loop_uses_it_on_the_cpu(tmp_path: Path) -> None:
    from samu_st.training import train
    from toy_train import ToyDataset, ToyModel, ToySampler, ToyTask, collate, toy_config

    class Probe(ToyTask):
        def __init__(self) -> None:
            super().__init__()
            self.standing_in: set[bool] = set()

        def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> Any:
            dropout = getattr(model, "module", model).head[2]
            self.standing_in.add("forward" in dropout.__dict__)
            return super().loss(model, batch)

    for setting, expected in (("fast", {True}), ("torch", {False})):
        probe, model = Probe(), ToyModel()
        cfg = toy_config(3, cpu_dropout=setting)
        train(probe, model, ToyDataset(24), collate, ToySampler(24, 8), cfg, tmp_path / setting)
        assert probe.standing_in == expected
        assert "forward" not in model.head[2].__dict__
