"""Grouped 1-D convolutions on the CPU in the channels-last layout oneDNN is fast at.

wav2vec2's positional convolution (``encoder.pos_conv_embed.conv``: kernel 128, 16 groups at
XLS-R size; kernel 32, 4 groups at the mini size; weight-normed; also in HuBERT and WavLM) is a
grouped ``Conv1d``. On the CPU PyTorch runs it through oneDNN in the ``(B, C, T)`` layout;
the same convolution as a ``conv2d`` over ``(B, C, 1, T)`` in ``channels_last`` memory format
computes the same sums in another order, faster. Measured 2026-12-05 (2-core AMD EPYC, one
thread, bf16 autocast, the mini size's 65 × 192 × 45 batch): forward 26.8 → 10.5 ms, forward +
input gradient 35.5 → 19.2 ms, + weight gradient 52.3 → 32.9 ms; largest difference 5e-6 in
fp32 (summation order), one bf16 unit in bf16.

:func:`channels_last_grouped_conv1d` gives the grouped ``Conv1d`` modules of a model that
forward for the time of a ``with`` block (an instance attribute, deleted on exit: the
module, its parametrisations and its state dict are untouched); inputs on other devices go
through the module's own forward.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F


def grouped_conv1d_modules(model: nn.Module) -> list[nn.Conv1d]:
    """The ``Conv1d`` modules with ``groups > 1``, zero padding given as a number, that the
    channels-last forward can stand in for."""
    return [
        m
        for m in model.modules()
        if isinstance(m, nn.Conv1d)
        and m.groups > 1
        and m.padding_mode == "zeros"
        and not isinstance(m.padding, str)
    ]


def _channels_last_forward(conv: nn.Conv1d) -> Any:
    own = type(conv).forward

    def forward(x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu":
            return own(conv, x)
        weight = conv.weight  # a parametrised weight (weight norm) is computed here
        out = F.conv2d(
            x.unsqueeze(2).contiguous(memory_format=torch.channels_last),
            weight.unsqueeze(2).contiguous(memory_format=torch.channels_last),
            conv.bias,
            stride=(1, conv.stride[0]),
            padding=(0, int(conv.padding[0])),
            dilation=(1, conv.dilation[0]),
            groups=conv.groups,
        )
        return out.squeeze(2)

    return forward


@contextmanager
def _standing_in(conv: nn.Conv1d) -> Iterator[None]:
    conv.forward = _channels_last_forward(conv)  # type: ignore[method-assign]
    try:
        yield
    finally:
        del conv.forward


@contextmanager
def channels_last_convs(convs: Sequence[nn.Conv1d]) -> Iterator[int]:
    """Run ``convs`` (from :func:`grouped_conv1d_modules`, found once by a caller that enters
    this block per forward) in channels-last ``conv2d`` form on the CPU inside the block;
    yields how many stand in."""
    with ExitStack() as stack:
        for conv in convs:
            stack.enter_context(_standing_in(conv))
        yield len(convs)


def channels_last_grouped_conv1d(model: nn.Module) -> AbstractContextManager[int]:
    """:func:`channels_last_convs` of ``model``'s grouped ``Conv1d`` modules."""
    return channels_last_convs(grouped_conv1d_modules(model))
