"""Bottleneck adapters inserted into a transformers speech encoder by forward hooks.

Two adapters per transformer layer (Houlsby / MAD-X style, as in the paper §2): one on the
output of the self-attention block and one on the output of the feed-forward block, each
applied before the layer adds its residual. They are attached as child modules named
``bottleneck_adapter`` of the sublayer they follow, so:

- the original parameter names are unchanged (a pretrained checkpoint still loads), and the
  adapters appear in ``state_dict()`` as ``encoder.layers.{i}.attention.bottleneck_adapter.*``;
- no transformers code is copied: a module-level forward hook rewrites the submodule's output;
- the choice is recorded in ``model.config.samu_bottleneck_adapters`` so that
  :func:`samu_st.models.encoder.build_encoder` re-creates and reloads them from a saved folder
  (plain ``from_pretrained`` loads the base model and ignores the adapters).

Where they go, per layer type (found by the layer's submodules, never by parameter names):

- wav2vec2 / HuBERT / WavLM (post-LN and pre-LN "stable" layers): ``attention`` and
  ``feed_forward``, exactly the paper's places.
- Whisper encoder layers (pre-LN): ``self_attn`` and ``fc2`` (the feed-forward's output
  projection, before its dropout and the residual add): the same two places.
- w2v-BERT conformer layers (macaron: FFN½ → self-attention → convolution module → FFN½ →
  LayerNorm): ``self_attn`` and ``ffn2``. Two adapters, as in the paper, so that the adapter
  budget per layer (2 · 2 · D · D/4) is the same for every family. After self-attention is the
  paper's first place unchanged. The second follows the paper's "after the feed-forward": in a
  Transformer layer the feed-forward is the last sublayer, and in a conformer that is ``ffn2``,
  whose output (scaled by ½ with the adapter inside) is the last change before the final
  LayerNorm, so the adapter sees and can correct everything the layer computed, as the
  paper's second adapter does. ``ffn1`` is left alone because the self-attention adapter
  follows it directly; the convolution module is left alone because it is a local (31-tap)
  filter between two adapted sublayers, and an adapter there would add a third adapter per
  layer and 50% more adapter parameters than the other families.
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
    encoder = getattr(base, "encoder", None)
    layers = getattr(encoder, "layers", None) if encoder is not None else None
    if layers is None:
        layers = getattr(base, "layers", None)  # WhisperEncoder holds its layers itself
    if not isinstance(layers, nn.ModuleList) or not all(_sites(layer) for layer in layers):
        raise TypeError(
            f"{type(model).__name__} has no encoder layers with a self-attention and a "
            "feed-forward submodule; bottleneck adapters need a wav2vec2-, conformer- or "
            "Whisper-style encoder"
        )
    return layers


Site = tuple[nn.Module, Callable[[nn.Module, Any, Any], Any]]


def _sites(layer: nn.Module) -> list[Site]:
    """The (submodule, hook) pairs that get an adapter in ``layer`` (module docstring)."""
    children = dict(layer.named_children())
    if "attention" in children and "feed_forward" in children:  # wav2vec2, HuBERT, WavLM
        return [
            (children["attention"], _attention_hook),
            (children["feed_forward"], _feed_forward_hook),
        ]
    if {"self_attn", "conv_module", "ffn2"} <= children.keys():  # w2v-BERT conformer
        return [(children["self_attn"], _attention_hook), (children["ffn2"], _feed_forward_hook)]
    if {"self_attn", "fc1", "fc2"} <= children.keys():  # Whisper encoder layer
        return [(children["self_attn"], _attention_hook), (children["fc2"], _feed_forward_hook)]
    return []


def _model_dim(layer: nn.Module) -> int:
    norms = [m for m in layer.modules() if isinstance(m, nn.LayerNorm)]
    if not norms:
        raise TypeError(f"{type(layer).__name__} has no LayerNorm to read the model size from")
    return int(norms[-1].normalized_shape[0])


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
        dim = _model_dim(layer)
        for target, hook in _sites(layer):
            adapter = BottleneckAdapter(
                dim, ratio, activation, layer_norm, device=reference.device, dtype=reference.dtype
            )
            target.add_module(ADAPTER_ATTR, adapter)
            target.register_forward_hook(hook)
            added.append(adapter)
    config = getattr(model, "config", None)
    if config is not None:
        spec = {"ratio": ratio, "activation": activation, "layer_norm": layer_norm}
        setattr(config, CONFIG_KEY, spec)
    return added


def adapter_state_key(key: str) -> str | None:
    """The part of an adapter's checkpoint key from its layer on, or None for other keys.

    ``wav2vec2.encoder.layers.3.attention.bottleneck_adapter.down.weight`` (a CTC checkpoint)
    and ``encoder.layers.3.attention.bottleneck_adapter.down.weight`` both give
    ``layers.3.attention.bottleneck_adapter.down.weight``; so does a Whisper encoder's
    ``layers.3.self_attn.bottleneck_adapter.down.weight`` its own.
    """
    if f".{ADAPTER_ATTR}." not in key:
        return None
    start = 0 if key.startswith("layers.") else key.rfind(".layers.") + 1
    return key[start:] if key.startswith("layers.", start) else None


def restore_bottleneck_adapters(model: nn.Module, folder: str) -> None:
    """Re-create the adapters recorded in ``model.config`` and load their weights from ``folder``.

    For a model loaded with ``from_pretrained`` from a folder saved with adapters (transformers
    itself skips their weights). Works for every encoder family and heads such as
    ``Wav2Vec2ForCTC``.
    """
    base: Any = getattr(model, "base_model", model)
    spec = dict(getattr(base.config, CONFIG_KEY))
    ratio, activation, layer_norm = spec["ratio"], spec["activation"], spec["layer_norm"]
    add_bottleneck_adapters(base, float(ratio), str(activation), bool(layer_norm))
    expected = {k: v for k, v in base.state_dict().items() if f".{ADAPTER_ATTR}." in k}
    by_layer = {adapter_state_key(k): k for k in expected}
    tensors = read_checkpoint_tensors(folder, lambda key: adapter_state_key(key) is not None)
    state = {by_layer.get(adapter_state_key(k), k): v for k, v in tensors.items()}
    check_state_dict(state, expected, folder)
    base.load_state_dict(state, strict=False)
