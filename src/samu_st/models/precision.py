"""Weights stored in bf16 for the time of a bf16-autocast region, without changing its results.

Under ``torch.autocast(dtype=torch.bfloat16)`` every ``Linear`` and ``Conv`` casts its fp32
weight and bias to bf16 at EVERY call: autocast caches casts only of leaf tensors that require
grad, so frozen weights and inference weights are re-cast each forward (for XLS-R 300M that is
~300M elements per forward). :func:`bf16_weights` stores those tensors in bf16 once, for the
duration of a ``with`` block, and puts the original fp32 parameters back on exit. Autocast
rounds fp32 → bf16 exactly as ``Tensor.to(torch.bfloat16)`` does, so the block computes the
very same numbers as autocast alone, faster; outside autocast it must not be used (a bf16
weight would then meet an fp32 input).

Left alone: modules other than ``Linear``/``ConvNd`` (norms, embeddings: autocast runs or keeps
them in fp32), weights shared with such a module (MBART's ``lm_head`` is the token embedding),
parametrised weights (wav2vec2's weight-normed positional conv) and, with ``frozen_only``,
weights that require grad (their fp32 master copy is what the optimiser updates).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn.utils import parametrize

_CAST_BY_AUTOCAST = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NAMES = ("weight", "bias")


def _shared_elsewhere(model: nn.Module) -> set[int]:
    """ids of parameters held by a module autocast does not cast for (kept fp32)."""
    ids: set[int] = set()
    for module in model.modules():
        if not isinstance(module, _CAST_BY_AUTOCAST):
            ids.update(id(p) for p in module._parameters.values() if p is not None)
    return ids


def castable(model: nn.Module, frozen_only: bool = True) -> list[tuple[nn.Module, str]]:
    """``(module, name)`` of every fp32 weight/bias :func:`bf16_weights` stores in bf16."""
    shared = _shared_elsewhere(model)
    seen: set[int] = set()
    chosen: list[tuple[nn.Module, str]] = []
    for module in model.modules():
        if not isinstance(module, _CAST_BY_AUTOCAST) or parametrize.is_parametrized(module):
            continue
        for name in _NAMES:
            param = module._parameters.get(name)
            if param is None or param.dtype != torch.float32 or id(param) in shared:
                continue
            if frozen_only and param.requires_grad:
                continue
            if id(param) in seen:  # tied between two Linear layers: both keep fp32
                shared.add(id(param))
                continue
            seen.add(id(param))
            chosen.append((module, name))
    return [(m, n) for m, n in chosen if id(m._parameters[n]) not in shared]


@contextmanager
def bf16_weights(model: nn.Module, frozen_only: bool = True) -> Iterator[int]:
    """Store the castable weights of ``model`` in bf16 inside the block (yields how many
    elements); the original fp32 parameters are restored on exit, even after an error.

    Use it only where the block runs under bf16 autocast (see the module docstring);
    ``frozen_only=False`` also casts weights that require grad: for inference only.
    """
    originals: list[tuple[nn.Module, str, nn.Parameter]] = []
    elements = 0
    try:
        for module, name in castable(model, frozen_only):
            param = module._parameters[name]
            assert param is not None
            originals.append((module, name, param))
            module._parameters[name] = nn.Parameter(
                param.detach().to(torch.bfloat16), requires_grad=False
            )
            elements += param.numel()
        yield elements
    finally:
        for module, name, param in reversed(originals):
            module._parameters[name] = param
