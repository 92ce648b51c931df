"""The attention implementation of every transformers module of a model, for a block.

transformers' attention modules (wav2vec2, HuBERT, w2v-BERT, Whisper, MBART) pick their kernel
at every forward from ``module.config._attn_implementation``, and the mask helpers build the
mask that kernel wants from the same field. A model assembled from parts holds several config
objects: the encoder layers of a loaded wav2vec2 keep their own, which
``PreTrainedModel.set_attn_implementation`` on an outer model does not reach.
:func:`attention_implementation` sets the field on every distinct config that a module of the
model holds and puts the old values back on exit, so a checkpoint or an export written after
the block names the implementation the model was built with.

Why (``train.cpu_attention``): on a CPU under bf16 autocast, ``"eager"`` (bf16 ``matmul``,
softmax, bf16 ``matmul``) trains faster than SDPA. SDPA's math backend upcasts the bf16 query,
key and value to fp32 and runs a masked "safe" softmax (``isneginf`` + ``all`` + ``where`` over
every score); its fused CPU kernel has a slow backward. Measured 2026-12-05 on a 2-core AMD
EPYC, one thread, the mini step-3 update in the training loop: 132-133 audio-s/s eager vs
118-126 math (interleaved runs).

:data:`CPU_EAGER` (``"samu_eager"``) is transformers' eager attention with the dropout of the
attention probabilities drawn by :func:`samu_st.models.cpu_dropout.cpu_dropout`, registered
with transformers' ``AttentionInterface`` (and eager's mask with ``AttentionMaskInterface``):
the extension point transformers documents for custom attention functions. It is used only for
the model types in :data:`CPU_EAGER_MODEL_TYPES`, whose eager attention is this formula; any
other config gets plain ``"eager"``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from transformers import AttentionInterface, AttentionMaskInterface, PretrainedConfig
from transformers.masking_utils import eager_mask

from samu_st.models.cpu_dropout import cpu_dropout

CPU_EAGER = "samu_eager"
# model types whose eager attention is matmul · scaling (+ position bias) + mask → softmax →
# dropout → matmul (transformers 5: modeling_{wav2vec2,hubert,wav2vec2_bert,whisper,mbart}.py)
CPU_EAGER_MODEL_TYPES = frozenset({"wav2vec2", "hubert", "wav2vec2-bert", "whisper", "mbart"})


def cpu_eager_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    position_bias: torch.Tensor | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """transformers' eager attention, (B, H, T, D) in, (B, T, H, D) out, with
    :func:`~samu_st.models.cpu_dropout.cpu_dropout` on the attention probabilities."""
    scale = query.size(-1) ** -0.5 if scaling is None else scaling
    weights = torch.matmul(query, key.transpose(2, 3)) * scale
    if position_bias is not None:  # w2v-BERT's relative position bias
        weights = weights + position_bias
    if attention_mask is not None:
        weights = weights + attention_mask
    weights = nn.functional.softmax(weights, dim=-1)
    weights = cpu_dropout(weights, dropout, module.training)
    out = torch.matmul(weights, value).transpose(1, 2).contiguous()
    return out, weights


AttentionInterface.register(CPU_EAGER, cpu_eager_attention)
AttentionMaskInterface.register(CPU_EAGER, eager_mask)


def module_configs(model: nn.Module) -> list[PretrainedConfig]:
    """The distinct transformers configs held by ``model``'s modules (``module.config``), in
    module order."""
    seen: dict[int, PretrainedConfig] = {}
    for module in model.modules():
        config = getattr(module, "config", None)
        if isinstance(config, PretrainedConfig):
            seen.setdefault(id(config), config)
    return list(seen.values())


def _name_for(config: PretrainedConfig, name: str) -> str:
    if name == CPU_EAGER and config.model_type not in CPU_EAGER_MODEL_TYPES:
        return "eager"
    return name


@contextmanager
def attention_implementation(model: nn.Module, name: str) -> Iterator[int]:
    """Every transformers module of ``model`` attends with ``name`` (``"eager"``, ``"sdpa"``,
    :data:`CPU_EAGER`) inside the block; yields how many configs changed. The old values
    return on exit, even after an error."""
    changed: list[tuple[PretrainedConfig, object]] = []
    try:
        for config in module_configs(model):
            old = config._attn_implementation_internal
            new = _name_for(config, name)
            if old != new:
                changed.append((config, old))
                config._attn_implementation_internal = new
        yield len(changed)
    finally:
        for config, old in reversed(changed):
            config._attn_implementation_internal = old
