"""The length adaptor between the speech encoder and the decoder: transformers' own
``Wav2Vec2Adapter`` (stride-2 Conv1d + GLU layers) made padding-exact."""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import nn
from transformers import Wav2Vec2Config, Wav2Vec2Model
from transformers.models.wav2vec2.modeling_wav2vec2 import Wav2Vec2Adapter

from samu_st.models.encoder import lengths_to_mask


class LengthAdaptor(Wav2Vec2Adapter):
    """transformers' ``Wav2Vec2Adapter`` (Conv1d(k=3, stride 2, pad 1) + GLU per layer) whose
    output on valid frames does not depend on padding.

    The original convolves padded frames into the last valid ones (and applies encoder
    LayerDrop to whole layers, which changes the output length the decoder mask assumes).
    Here padded frames are zeroed before every layer (what a lone utterance sees as the conv's
    zero padding) and no layer is ever skipped. The valid frame counts come from
    :func:`_remember_frame_lengths`, a pre-hook on the ``Wav2Vec2Model``. Parameter names are
    the original ones (``adapter.layers.{i}.conv.*``).
    """

    def __init__(self, config: Wav2Vec2Config) -> None:
        super().__init__(config)
        self.frame_lengths: torch.Tensor | None = None  # (B,) valid encoder frames, per call

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """(B, T, D) encoder states → (B, T', D'), T' = :func:`length_adaptor_output_lengths`."""
        if self.proj is not None and self.proj_layer_norm is not None:
            hidden_states = self.proj_layer_norm(self.proj(hidden_states))
        x = hidden_states.transpose(1, 2)
        lengths = self.frame_lengths
        for layer in self.layers:
            if lengths is not None:
                mask = lengths_to_mask(lengths.to(x.device), x.shape[-1])
                x = x * mask[:, None, :].to(x.dtype)
                lengths = length_adaptor_output_lengths(lengths, 1)
            x = layer(x)
        return x.transpose(1, 2)


def length_adaptor_output_lengths(lengths: torch.Tensor, num_layers: int) -> torch.Tensor:
    """(B,) frame counts → (B,) counts after ``num_layers`` Conv1d(k=3, stride=2, padding=1)."""
    for _ in range(num_layers):
        lengths = torch.div(lengths - 1, 2, rounding_mode="floor") + 1
    return lengths


def _remember_frame_lengths(
    module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    adaptor = getattr(module, "adapter", None)
    if not isinstance(adaptor, LengthAdaptor):
        return
    mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)
    if mask is None:
        adaptor.frame_lengths = None
        return
    encoder = cast(Wav2Vec2Model, module)
    lengths = mask.to(torch.long).sum(-1)
    frames = encoder._get_feat_extract_output_lengths(cast(torch.LongTensor, lengths), False)
    adaptor.frame_lengths = frames


def attach_length_adaptor(encoder: nn.Module, num_layers: int) -> None:
    """Give ``encoder`` a fresh :class:`LengthAdaptor` of ``num_layers`` (0: none), in place.

    For a ``Wav2Vec2Model``, sets ``add_adapter`` and ``num_adapter_layers`` in its config, so
    that transformers' own output-length and mask functions account for the adaptor. For a
    wrapped family model (:class:`~samu_st.models.family_model.FamilySpeechModel`) the count is
    recorded under its own key, which the wrapper's length functions read.
    """
    if num_layers < 0:
        raise ValueError(f"length_adaptor_layers must be >= 0, got {num_layers}")
    if not isinstance(encoder, Wav2Vec2Model):
        _attach_to_family_model(encoder, num_layers)
        return
    config = encoder.config
    config.add_adapter = num_layers > 0
    config.num_adapter_layers = num_layers
    config.adapter_kernel_size = 3  # the output-length formula of transformers assumes 3
    config.adapter_stride = 2
    config.output_hidden_size = config.hidden_size  # enc_to_dec_proj maps to the decoder size
    if num_layers == 0:
        encoder.adapter = None
        return
    reference = next(encoder.encoder.parameters())  # (masked_spec_embed ignores `meta`)
    with torch.device(reference.device):
        adaptor = LengthAdaptor(config).to(dtype=reference.dtype)
    if not reference.is_meta:
        adaptor.apply(encoder._init_weights)  # transformers' init for these convs
    encoder.adapter = adaptor
    if not getattr(encoder, "_samu_length_hook", False):
        encoder.register_forward_pre_hook(_remember_frame_lengths, with_kwargs=True)
        setattr(encoder, "_samu_length_hook", True)  # noqa: B010 (not a module attribute)


def _attach_to_family_model(encoder: nn.Module, num_layers: int) -> None:
    from samu_st.models.family_model import LENGTH_ADAPTOR_KEY

    wrapped: Any = encoder
    config = wrapped.config
    dim = int(config.hidden_size)
    setattr(config, LENGTH_ADAPTOR_KEY, num_layers)
    config.output_hidden_size = dim  # what SpeechEncoderDecoderModel projects to the decoder
    if num_layers == 0:
        wrapped.adapter = None
        return
    adaptor_config = Wav2Vec2Config(
        hidden_size=dim,
        output_hidden_size=dim,
        num_adapter_layers=num_layers,
        adapter_kernel_size=3,
        adapter_stride=2,
        layerdrop=0.0,
    )
    reference = next(wrapped.model.parameters())
    with torch.device(reference.device):
        adaptor = LengthAdaptor(adaptor_config).to(dtype=reference.dtype)
    if not reference.is_meta:  # the init transformers gives these convs in a Wav2Vec2Model
        for module in adaptor.modules():
            if isinstance(module, nn.Conv1d):
                nn.init.kaiming_normal_(module.weight)
    wrapped.adapter = adaptor
