"""The MBART decoder of the speech translator and its LNA-D fine-tuning selection.

The translator uses only MBART's DECODER (paper §2: "the autoregressive transformer decoder of
the MBART checkpoint"), as transformers' ``MBartForCausalLM`` with cross-attention: it is built
from a local MBART folder (``MBartForConditionalGeneration``, e.g. a copy of
``facebook/mbart-large-50-many-to-one-mmt``, or ``MBartForCausalLM``) or from a size preset.

Loading is done here rather than with ``MBartForCausalLM.from_pretrained``: checkpoints written
by ``save_pretrained`` store the tied token embedding once, as ``model.shared.weight``, and
``from_pretrained`` then leaves ``model.decoder.embed_tokens`` (and the tied output projection)
RANDOM with only a log line. :func:`load_mbart_decoder` maps ``shared`` to the decoder embedding
and fails on any missing or mis-shaped decoder tensor.

LNA-D (Li et al. 2020, "Multilingual speech translation with efficient finetuning of pretrained
models"; paper §2): only the cross-attention blocks and the layer norms of the decoder train.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from transformers import MBartConfig, MBartForCausalLM
from transformers.models.mbart.modeling_mbart import MBartDecoder

from samu_st.errors import ModelLoadError
from samu_st.models.loading import (
    check_state_dict,
    hf_load_errors,
    read_checkpoint_tensors,
    require_pretrained_folder,
)

logger = logging.getLogger(__name__)

DecoderPreset = Literal["tiny", "mini", "paper"]
DecoderTrainable = Literal["lna", "full", "frozen"]
LAYER_NORMS = ("self_attn_layer_norm", "encoder_attn_layer_norm", "final_layer_norm")


@dataclass(frozen=True)
class DecoderConfig:
    """Where the MBART decoder comes from and which of its parameters train."""

    # Local MBART folder (config.json + weights), e.g. a copy of
    # facebook/mbart-large-50-many-to-one-mmt; None builds a random `preset` decoder.
    pretrained: str | None = None
    # Architecture when `pretrained` is None: tiny (tests), mini (CPU demo), paper (MBART-50).
    preset: DecoderPreset = "mini"
    # lna: cross-attention + layer norms train (LNA-D, paper §2); full: everything trains;
    # frozen: nothing trains.
    trainable: DecoderTrainable = "lna"
    # Dropout on hidden states / attention weights; None keeps the checkpoint's or preset's.
    dropout: float | None = None
    attention_dropout: float | None = None


_PAPER = {  # facebook/mbart-large-50(-many-to-one-mmt), config.json
    "vocab_size": 250054,
    "d_model": 1024,
    "encoder_layers": 12,
    "decoder_layers": 12,
    "encoder_attention_heads": 16,
    "decoder_attention_heads": 16,
    "encoder_ffn_dim": 4096,
    "decoder_ffn_dim": 4096,
    "max_position_embeddings": 1024,
    "activation_function": "gelu",
    "dropout": 0.1,
    "attention_dropout": 0.0,
    "activation_dropout": 0.0,
}
_PRESETS: dict[str, dict[str, Any]] = {
    "paper": _PAPER,
    # CPU demo: 3 layers of 256, trained on text (denoising) by the mini pipeline.
    "mini": {
        "d_model": 256,
        "encoder_layers": 3,
        "decoder_layers": 3,
        "encoder_attention_heads": 4,
        "decoder_attention_heads": 4,
        "encoder_ffn_dim": 1024,
        "decoder_ffn_dim": 1024,
        "max_position_embeddings": 256,
        "dropout": 0.1,
        "attention_dropout": 0.0,
    },
    "tiny": {
        "d_model": 16,
        "encoder_layers": 1,
        "decoder_layers": 2,
        "encoder_attention_heads": 2,
        "decoder_attention_heads": 2,
        "encoder_ffn_dim": 32,
        "decoder_ffn_dim": 32,
        "max_position_embeddings": 64,
        "dropout": 0.0,
        "attention_dropout": 0.0,
    },
}
# MBART's fairseq special ids, shared by every tokenizer of samu_st.models.tokenizer.
_SPECIAL_IDS = {
    "bos_token_id": 0,
    "pad_token_id": 1,
    "eos_token_id": 2,
    "decoder_start_token_id": 2,
    "forced_eos_token_id": 2,
}


def mbart_config(preset: DecoderPreset, vocab_size: int | None = None, **extra: Any) -> MBartConfig:
    """The ``MBartConfig`` of a preset (encoder sizes too, for text pretraining with
    ``MBartForConditionalGeneration``). Pre-LN layers with a final layer norm and
    ``layernorm_embedding``, scaled embeddings, tied output projection, as in MBART-50."""
    if preset not in _PRESETS:
        raise ValueError(f"unknown decoder preset {preset!r}; choose one of {sorted(_PRESETS)}")
    kwargs: dict[str, Any] = {**_PRESETS[preset], **_SPECIAL_IDS, "scale_embedding": True}
    if vocab_size is not None:
        kwargs["vocab_size"] = vocab_size
    if "vocab_size" not in kwargs:
        raise ValueError(f"preset {preset!r} needs a vocab_size (the tokenizer's length)")
    kwargs.update(extra)
    return MBartConfig(**kwargs)


def as_decoder_config(config: MBartConfig, cfg: DecoderConfig | None) -> MBartConfig:
    """Turn an MBART config into the causal-LM decoder's, in place (with ``cfg``'s dropout)."""
    config.is_decoder = True
    config.add_cross_attention = True
    config.is_encoder_decoder = False
    config.use_cache = True
    # transformers sizes the decoder's KV cache by `num_hidden_layers`, which MBartConfig maps
    # to `encoder_layers`; the causal LM has no encoder, so make the two agree.
    config.encoder_layers = config.decoder_layers
    config.encoder_attention_heads = config.decoder_attention_heads
    if cfg is not None and cfg.dropout is not None:
        config.dropout = cfg.dropout
    if cfg is not None and cfg.attention_dropout is not None:
        config.attention_dropout = cfg.attention_dropout
    return config


def _decoder_key(key: str) -> str | None:
    """Checkpoint key → ``MBartForCausalLM`` key (``None`` if not a decoder tensor).

    ``model.decoder.*`` (seq2seq or causal-LM checkpoints) and ``decoder.*`` (``MBartModel``)
    map to ``model.decoder.*``; the shared embedding maps to the decoder's token embedding.
    """
    bare = key.removeprefix("model.")
    if bare.startswith("decoder."):
        return "model." + bare
    if bare == "shared.weight":
        return "model.decoder.embed_tokens.weight"
    return None


def load_mbart_decoder(folder: str | Path, cfg: DecoderConfig | None = None) -> MBartForCausalLM:
    """The decoder of a local MBART folder as ``MBartForCausalLM``, every tensor checked.

    Raises :class:`ModelLoadError` for a missing folder, a non-MBART config, or a decoder tensor
    that is missing or has another shape. The seq2seq ``final_logits_bias`` has no place in a
    causal LM; it is all zeros in MBART-50 checkpoints, and a warning says so when it is not.
    """
    path = require_pretrained_folder(folder, "MBART decoder")
    with hf_load_errors(path, "MBART config"):
        config = MBartConfig.from_pretrained(str(path), local_files_only=True)
    if getattr(config, "model_type", None) != "mbart":
        raise ModelLoadError(
            f"{path}: config.json has model_type {getattr(config, 'model_type', None)!r}, "
            "expected 'mbart'"
        )
    model = MBartForCausalLM(as_decoder_config(config, cfg))
    tensors = read_checkpoint_tensors(  # the MBART encoder's tensors are never read
        path, lambda key: _decoder_key(key) is not None or key == "final_logits_bias"
    )
    bias = tensors.pop("final_logits_bias", None)
    if bias is not None and bool(bias.abs().max() > 0):
        logger.warning("%s: final_logits_bias is not zero; the decoder-only model drops it", path)
    state: dict[str, torch.Tensor] = {}
    for key, value in sorted(tensors.items(), key=lambda kv: kv[0].endswith("shared.weight")):
        mapped = _decoder_key(key)
        if mapped is not None and mapped not in state:  # a decoder's own embedding wins
            state[mapped] = value
    expected = {k: v for k, v in model.state_dict().items() if not k.startswith("lm_head.")}
    check_state_dict(state, expected, path)
    model.load_state_dict(state, strict=False)
    if model.lm_head.weight is not model.model.decoder.embed_tokens.weight:
        raise ModelLoadError(f"{path}: the output projection is not tied to the embedding")
    return model


def build_mbart(cfg: DecoderConfig, vocab_size: int | None = None) -> MBartForCausalLM:
    """The decoder ``cfg`` describes, with at least ``vocab_size`` tokens.

    A pretrained decoder whose vocabulary is smaller than ``vocab_size`` (new language tokens)
    is resized; new rows are drawn around the mean of the old ones (transformers'
    ``mean_resizing``). Does not freeze anything: see :func:`set_decoder_trainable`.
    """
    if cfg.pretrained is None:
        return MBartForCausalLM(as_decoder_config(mbart_config(cfg.preset, vocab_size), cfg))
    model = load_mbart_decoder(cfg.pretrained, cfg)
    current = model.config.vocab_size
    if vocab_size is not None and vocab_size < current:
        raise ModelLoadError(
            f"{cfg.pretrained}: the tokenizer has {vocab_size} tokens but the decoder {current}; "
            "use the tokenizer that belongs to this decoder"
        )
    if vocab_size is not None and vocab_size > current:
        model.resize_token_embeddings(vocab_size, mean_resizing=True)
    return model


def mbart_decoder(model: nn.Module) -> MBartDecoder:
    """The ``MBartDecoder`` inside ``MBartForCausalLM`` (or the decoder itself)."""
    if isinstance(model, MBartDecoder):
        return model
    if isinstance(model, MBartForCausalLM):
        inner = model.model.decoder
        assert isinstance(inner, MBartDecoder)
        return inner
    raise TypeError(f"expected MBartForCausalLM or MBartDecoder, got {type(model).__name__}")


def lna_d_modules(model: nn.Module) -> dict[str, nn.Module]:
    """The modules LNA-D trains, by exact path inside the ``MBartDecoder``.

    Each layer's ``encoder_attn`` (cross-attention) and its three layer norms, plus the
    decoder's ``layernorm_embedding`` and final ``layer_norm``. Raises ``TypeError`` if the
    decoder holds a LayerNorm this list misses (an architecture this selection does not know).
    """
    decoder = mbart_decoder(model)
    selected: dict[str, nn.Module] = {
        "layernorm_embedding": decoder.layernorm_embedding,
        "layer_norm": decoder.layer_norm,
    }
    for i, layer in enumerate(decoder.layers):
        cross_attention: nn.Module = getattr(layer, "encoder_attn")  # noqa: B009
        selected[f"layers.{i}.encoder_attn"] = cross_attention
        for name in LAYER_NORMS:
            norm: nn.Module = getattr(layer, name)
            selected[f"layers.{i}.{name}"] = norm
    for path, module in selected.items():
        if "norm" in path.rsplit(".", 1)[-1] and not isinstance(module, nn.LayerNorm):
            raise TypeError(f"decoder.{path} is a {type(module).__name__}, not a LayerNorm")
    chosen = {id(m) for m in selected.values()}
    for path, module in decoder.named_modules():
        if isinstance(module, nn.LayerNorm) and id(module) not in chosen:
            raise TypeError(f"decoder.{path} is a LayerNorm that LNA-D does not know about")
    return selected


def apply_lna_d(model: nn.Module) -> list[str]:
    """Freeze the whole decoder, then unfreeze exactly :func:`lna_d_modules`; returns their
    paths. Token/position embeddings, self-attention, feed-forward and the output projection
    stay frozen."""
    model.requires_grad_(False)
    selected = lna_d_modules(model)
    for module in selected.values():
        module.requires_grad_(True)
    return list(selected)


def set_decoder_trainable(model: nn.Module, trainable: DecoderTrainable) -> None:
    """Apply ``DecoderConfig.trainable`` to an ``MBartForCausalLM``."""
    if trainable == "lna":
        apply_lna_d(model)
    elif trainable in ("full", "frozen"):
        model.requires_grad_(trainable == "full")
    else:
        raise ValueError(f"unknown decoder trainable setting {trainable!r}")


def lna_d_parameter_count(config: MBartConfig) -> int:
    """Trainable parameters under LNA-D, from the architecture alone.

    Per layer: cross-attention (q, k, v, out: ``4 (d² + d)``) and three layer norms (``3 · 2d``);
    plus ``layernorm_embedding`` and the final ``layer_norm`` (``2 · 2d``). The cross-attention
    keys and values read d-sized states (the encoder output is projected to d first).
    """
    d, layers = int(config.d_model), int(config.decoder_layers)
    return layers * (4 * (d * d + d) + 3 * 2 * d) + 2 * 2 * d


def decoder_parameter_count(config: MBartConfig) -> int:
    """All parameters of ``MBartForCausalLM`` from the architecture (output projection tied).

    Token embedding ``V·d``; learned positions ``(P + 2)·d`` (MBART's offset of 2); per layer
    self- and cross-attention ``2 · 4(d² + d)``, feed-forward ``2 d f + f + d``, three layer
    norms ``3 · 2d``; ``layernorm_embedding`` and final ``layer_norm`` ``2 · 2d``.
    """
    d, f = int(config.d_model), int(config.decoder_ffn_dim)
    vocab, positions = int(config.vocab_size), int(config.max_position_embeddings) + 2
    layer = 2 * 4 * (d * d + d) + (2 * d * f + f + d) + 3 * 2 * d
    return vocab * d + positions * d + int(config.decoder_layers) * layer + 2 * 2 * d
