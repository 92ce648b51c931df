"""Bottleneck adapters inserted into a transformers wav2vec2-style encoder by forward hooks.

Two adapters per transformer layer (Houlsby / MAD-X style, as in the paper §2): one on the
output of the self-attention block and one on the output of the feed-forward block, each
applied before the layer adds its residual. They are attached as child modules named
``bottleneck_adapter`` of the layer's ``attention`` and ``feed_forward`` submodules, so:

- the original parameter names are unchanged (a pretrained checkpoint still loads), and the
  adapters appear in ``state_dict()`` as ``encoder.layers.{i}.attention.bottleneck_adapter.*``;
- no transformers code is copied: a module-level forward hook rewrites the submodule's output;
- the choice is recorded in ``model.config.samu_bottleneck_adapters`` so that
  :func:`samu_st.models.encoder.build_wav2vec2` re-creates and reloads them from a saved folder
  (plain ``Wav2Vec2Model.from_pretrained`` loads the base model and ignores the adapters).

The hook works for both layer variants of ``transformers``: post-LN ``Wav2Vec2EncoderLayer``
and pre-LN ``Wav2Vec2EncoderLayerStableLayerNorm`` (XLS-R), and for any model whose
``base_model.encoder.layers[i]`` has ``attention`` and ``feed_forward`` children (HuBERT, WavLM).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from samu_st.models.loading import check_state_dict, read_checkpoint_tensors

#: Name of the adapter child module inside ``attention`` and ``feed_forward``.
ADAPTER_ATTR = "bottleneck_adapter"
#: Config attribute recording the adapters, saved in ``config.json``.
CONFIG_KEY = "samu_bottleneck_adapters"

_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
}


class BottleneckAdapter(nn.Module):
    """``x + up(act(down(norm(x))))`` with a zero-initialised up-projection (identity at init).

    Args:
        dim: model dimension D.
        ratio: hidden size as a fraction of D (the paper's best is 1/4).
        activation: one of ``relu``, ``gelu``, ``silu``, ``tanh``.
        layer_norm: apply a LayerNorm before the down-projection (off in the paper's setup).

    Shapes: ``(..., D) -> (..., D)``.
    """

    def __init__(
        self,
        dim: int,
        ratio: float = 0.25,
        activation: str = "relu",
        layer_norm: bool = False,
        *,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(f"adapter activation must be one of {sorted(_ACTIVATIONS)}")
        if not ratio > 0.0:
            raise ValueError(f"adapter ratio must be positive, got {ratio}")
        hidden = max(1, round(dim * ratio))
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        self.norm: nn.Module | None = nn.LayerNorm(dim, **factory) if layer_norm else None
        self.down = nn.Linear(dim, hidden, **factory)
        self.act = _ACTIVATIONS[activation]()
        self.up = nn.Linear(hidden, dim, **factory)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., D) -> (..., D)."""
        h = self.norm(x) if self.norm is not None else x
        return x + self.up(self.act(self.down(h)))


def _attention_hook(module: nn.Module, args: Any, output: Any) -> Any:
    # Attention returns (attn_output, attn_weights); only the states go through the adapter.
    adapter = getattr(module, ADAPTER_ATTR)
    if isinstance(output, tuple):
        return (adapter(output[0]), *output[1:])
    return adapter(output)


def _feed_forward_hook(module: nn.Module, args: Any, output: Any) -> Any:
    return getattr(module, ADAPTER_ATTR)(output)


def _encoder_layers(model: nn.Module) -> nn.ModuleList:
    base = getattr(model, "base_model", model)
    layers = getattr(getattr(base, "encoder", None), "layers", None)
    if not isinstance(layers, nn.ModuleList) or not all(
        hasattr(layer, "attention") and hasattr(layer, "feed_forward") for layer in layers
    ):
        raise TypeError(
            f"{type(model).__name__} has no encoder.layers with attention and feed_forward "
            "submodules; bottleneck adapters need a wav2vec2-style encoder"
        )
    return layers


def bottleneck_adapters(model: nn.Module) -> list[BottleneckAdapter]:
    """The bottleneck adapters inside ``model``, in layer order (empty if none)."""
    return [m for m in model.modules() if isinstance(m, BottleneckAdapter)]


def has_bottleneck_adapters(model: nn.Module) -> bool:
    """True if ``model`` already contains bottleneck adapters."""
    return any(isinstance(m, BottleneckAdapter) for m in model.modules())


def add_bottleneck_adapters(
    model: nn.Module,
    ratio: float = 0.25,
    activation: str = "relu",
    layer_norm: bool = False,
) -> nn.ModuleList:
    """Insert two adapters per transformer layer of a wav2vec2-style model, in place.

    Args:
        model: a ``Wav2Vec2Model`` (or ``Wav2Vec2ForCTC`` etc.; its ``base_model`` is used).
        ratio, activation, layer_norm: see :class:`BottleneckAdapter`.

    Returns:
        The new adapters, ``[layer0.attention, layer0.feed_forward, layer1.attention, ...]``.
        They already belong to ``model``; do not register this list as a submodule elsewhere
        (their parameters would be counted and saved twice).

    The adapters are created on the device and dtype of each layer (``meta`` works, for
    counting) and are trainable; freezing the rest is the caller's choice
    (:class:`samu_st.models.encoder.SpeechEncoder` modes). Raises ``ValueError`` if the model
    already has adapters.
    """
    if has_bottleneck_adapters(model):
        raise ValueError(f"{type(model).__name__} already has bottleneck adapters")
    layers = _encoder_layers(model)
    added = nn.ModuleList()
    for layer in layers:
        reference = next(layer.parameters())
        feed_forward: Any = layer.feed_forward
        dim = int(feed_forward.output_dense.out_features)
        for name, hook in (("attention", _attention_hook), ("feed_forward", _feed_forward_hook)):
            adapter = BottleneckAdapter(
                dim, ratio, activation, layer_norm, device=reference.device, dtype=reference.dtype
            )
            target = getattr(layer, name)
            target.add_module(ADAPTER_ATTR, adapter)
            target.register_forward_hook(hook)
            added.append(adapter)
    config = getattr(model, "config", None)
    if config is not None:
        spec = {"ratio": ratio, "activation": activation, "layer_norm": layer_norm}
        setattr(config, CONFIG_KEY, spec)
    return added


def adapter_state_key(key: str) -> str | None:
    """Map a checkpoint key to its adapter key relative to the base model, or None.

    ``wav2vec2.encoder.layers.3.attention.bottleneck_adapter.down.weight`` (a CTC checkpoint)
    and ``encoder.layers.3.attention.bottleneck_adapter.down.weight`` both give the latter.
    """
    if f".{ADAPTER_ATTR}." not in key or "encoder.layers." not in key:
        return None
    return key[key.index("encoder.layers.") :]


def restore_bottleneck_adapters(model: nn.Module, folder: str) -> None:
    """Re-create the adapters recorded in ``model.config`` and load their weights from ``folder``.

    For a model loaded with ``from_pretrained`` from a folder saved with adapters (transformers
    itself skips their weights). Works for ``Wav2Vec2Model`` and heads such as ``Wav2Vec2ForCTC``.
    """
    base: Any = getattr(model, "base_model", model)
    spec = dict(getattr(base.config, CONFIG_KEY))
    ratio, activation, layer_norm = spec["ratio"], spec["activation"], spec["layer_norm"]
    add_bottleneck_adapters(base, float(ratio), str(activation), bool(layer_norm))
    tensors = read_checkpoint_tensors(folder, lambda key: adapter_state_key(key) is not None)
    state = {adapter_state_key(k) or k: v for k, v in tensors.items()}
    expected = {k: v for k, v in base.state_dict().items() if f".{ADAPTER_ATTR}." in k}
    check_state_dict(state, expected, folder)
    base.load_state_dict(state, strict=False)
