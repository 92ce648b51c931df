"""The CPU-only model settings a training run holds for its whole length.

On a CPU the training loop runs the model with transformers' eager attention
(``train.cpu_attention: eager``, :mod:`samu_st.models.attention_impl`) and the fast CPU dropout
(``train.cpu_dropout: fast``, :mod:`samu_st.models.cpu_dropout`; with both on, also on the
attention probabilities through ``samu_eager``). Both are put back when the block ends. One
function, so that the loop and the benchmarks that mirror its updates
(``benchmarks/paper_measure.py``) cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import torch
from torch import nn

from samu_st.models.attention_impl import CPU_EAGER, attention_implementation
from samu_st.models.cpu_dropout import fast_dropout_modules
from samu_st.training.config import TrainConfig


def cpu_attention_name(cfg: TrainConfig, device: torch.device) -> str | None:
    """The attention implementation a run on ``device`` uses (None: the model's own)."""
    if device.type != "cpu" or cfg.cpu_attention != "eager":
        return None
    return CPU_EAGER if cfg.cpu_dropout == "fast" else "eager"


@contextmanager
def cpu_run_settings(model: nn.Module, cfg: TrainConfig, device: torch.device) -> Iterator[None]:
    """``cfg``'s CPU attention and dropout on ``model`` inside the block; nothing on other
    devices."""
    with ExitStack() as stack:
        name = cpu_attention_name(cfg, device)
        if name is not None:
            stack.enter_context(attention_implementation(model, name))
        if device.type == "cpu" and cfg.cpu_dropout == "fast":
            stack.enter_context(fast_dropout_modules(model))
        yield
