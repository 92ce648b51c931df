"""samu_st.models.conv_layout: wav2vec2's grouped positional conv as a channels-last conv2d on
the CPU gives the module's numbers (up to summation order) and gradients, is removed after the
block, and is what the training loop runs on a CPU (``train.cpu_grouped_conv``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from samu_st.models.conv_layout import channels_last_grouped_conv1d, grouped_conv1d_modules
from samu_st.models.encoder import EncoderConfig, build_wav2vec2

pytestmark = pytest.mark.usefixtures("one_thread")


def _model(mode: str = "full") -> nn.Module:
    torch.manual_seed(0)
    model = build_wav2vec2(EncoderConfig(size="tiny", mode=mode))  # type: ignore[arg-type]
    # no dropout or SpecAugment: two forwards see the same numbers
    return model.eval()


def _run(model: nn.Module, wav: torch.Tensor, standing_in: bool) -> tuple[torch.Tensor, dict]:
    model.zero_grad()
    if standing_in:
        with channels_last_grouped_conv1d(model) as n:
            assert n == 1
            out = model(wav).last_hidden_state
    else:
        out = model(wav).last_hidden_state
    (out * torch.linspace(-1, 1, out.shape[-1])).sum().backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    return out.detach(), grads


def test_only_the_grouped_positional_conv_stands_in() -> None:
    model = _model()
    (conv,) = grouped_conv1d_modules(model)
    assert conv is model.encoder.pos_conv_embed.conv
    with channels_last_grouped_conv1d(model):
        assert "forward" in conv.__dict__
    assert "forward" not in conv.__dict__  # the class's forward again
    assert {k for k in model.state_dict()} == set(_model().state_dict())


def test_outputs_and_gradients_equal_the_module_in_fp32() -> None:
    model = _model()
    wav = torch.randn(3, 9000, generator=torch.Generator().manual_seed(1))
    plain, plain_grads = _run(model, wav, False)
    stood, stood_grads = _run(model, wav, True)
    torch.testing.assert_close(stood, plain, rtol=1e-5, atol=1e-5)
    # the weight-normed conv's g and v get their gradients through the stand-in
    assert any("pos_conv_embed" in k for k in stood_grads)
    assert stood_grads.keys() == plain_grads.keys()
    for key, grad in plain_grads.items():
        torch.testing.assert_close(stood_grads[key], grad, rtol=1e-4, atol=1e-5, msg=key)


def test_bf16_autocast_is_the_same_up_to_rounding() -> None:
    model = _model()
    wav = torch.randn(2, 8000, generator=torch.Generator().manual_seed(2))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        plain = model(wav).last_hidden_state.float()
        with channels_last_grouped_conv1d(model):
            stood = model(wav).last_hidden_state.float()
    torch.testing.assert_close(stood, plain, rtol=0.05, atol=0.05)


def test_inputs_on_another_device_use_the_module_forward() -> None:
    conv = nn.Conv1d(8, 8, 5, padding=2, groups=2)
    x = torch.randn(2, 8, 11, device="meta")  # not the CPU: the module's own forward
    with channels_last_grouped_conv1d(conv):
        out = conv(x)
    assert out.device.type == "meta" and out.shape == (2, 8, 11)


def test_the_training_loop_uses_it_on_the_cpu(tmp_path: Path) -> None:
    from samu_st.training import train
    from toy_train import ToyDataset, ToyModel, ToySampler, ToyTask, collate, toy_config

    class Model(ToyModel):
        """The toy with a frozen grouped conv in front (as step 3's positional conv)."""

        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv1d(4, 4, 3, padding=1, groups=2).requires_grad_(False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, 8) = 4 channels × 2
            return super().forward(self.conv(x.view(-1, 4, 2)).flatten(1))

    class Probe(ToyTask):
        def __init__(self) -> None:
            super().__init__()
            self.standing_in: set[bool] = set()

        def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> Any:
            self.standing_in.add("forward" in getattr(model, "module", model).conv.__dict__)
            return super().loss(model, batch)

    for setting, expected in (("channels_last", {True}), ("default", {False})):
        probe, model = Probe(), Model()
        data = ToyDataset(24)
        cfg = toy_config(3, cpu_grouped_conv=setting)
        train(probe, model, data, collate, ToySampler(24, 8), cfg, tmp_path / setting)
        assert probe.standing_in == expected
        assert "forward" not in model.conv.__dict__
