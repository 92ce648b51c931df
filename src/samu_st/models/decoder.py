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
models"; paper §2): only the cross-attention blocks and the layer norms of the decoder train,
plus the embedding rows of language tokens the pretrained vocabulary lacks (ca, cy for
MBART-50): :class:`AddedTokenRows`. Frozen at their initialisation they would be a condition
the decoder never learnt, the same (mean) vector for both languages.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

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
from samu_st.models.tokenizer import PrefixMode
from samu_st.packaged import resolve_model_path

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
    # What follows the start token </s> in training and decoding: source ([</s>, <src>]),
    # target ([</s>, en_XX], MBART-50 many-to-one's) or both ([</s>, <src>, en_XX]); saved with
    # the model, which is always decoded with its own (samu_st.models.tokenizer.decoder_prefix).
    prefix: PrefixMode = "source"

    def __post_init__(self) -> None:
        # `packaged:<name>` names a checkpoint shipped in the package (samu_st.packaged)
        object.__setattr__(self, "pretrained", resolve_model_path(self.pretrained))


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


def build_mbart(
    cfg: DecoderConfig, vocab_size: int | None = None, related: Mapping[int, int] | None = None
) -> MBartForCausalLM:
    """The decoder ``cfg`` describes, with at least ``vocab_size`` tokens.

    A pretrained decoder whose vocabulary is smaller than ``vocab_size`` (new language tokens)
    is resized by :func:`resize_embeddings` (new rows distinct, from ``related`` ids where
    given). Does not freeze anything: see :func:`set_decoder_trainable`.
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
        resize_embeddings(model, vocab_size, related or {})
    return model


def resize_embeddings(
    model: Any, vocab_size: int, related: Mapping[int, int], seed: int = 0
) -> None:
    """Grow a transformers model's (tied) token embedding to ``vocab_size`` rows, in place.

    A new row listed in ``related`` (new id → existing id) starts as a copy of that row; the
    others as the old rows' mean plus a seeded Gaussian of their per-dimension spread.
    transformers' ``mean_resizing`` alone draws them within ~1e-6 of the mean: two new
    languages would start (and, frozen, stay) one condition.
    """
    old = int(model.get_input_embeddings().weight.shape[0])
    model.resize_token_embeddings(vocab_size, mean_resizing=False)
    weight = model.get_input_embeddings().weight
    with torch.no_grad():
        base = weight[:old].float()
        generator = torch.Generator().manual_seed(seed)
        noise = torch.randn(vocab_size - old, weight.shape[1], generator=generator)
        fresh = base.mean(0) + noise.to(weight.device) * base.std(0)
        for offset, new_id in enumerate(range(old, vocab_size)):
            source = related.get(new_id)
            row = weight[source].float() if source is not None and source < old else fresh[offset]
            weight[new_id] = row.to(weight.dtype)


class AddedTokenRows(nn.Module):
    """Trainable embedding rows of tokens added to a pretrained vocabulary (ca, cy).

    Attached under the decoder's token embedding by :func:`attach_added_rows`; forward hooks
    on the embedding and on the tied output projection use ``rows`` for these ids, so they
    train (in and out, tied) while the 250k-row embedding stays frozen and no optimiser
    state or gradient all-reduce covers it. ``rows`` enter every forward, so data-parallel
    training never sees them unused. :func:`sync_added_rows` copies them into the embedding
    (what a plain transformers load reads).
    """

    token_ids: torch.Tensor  # (N,) the added ids (a buffer, saved with the model)

    def __init__(self, token_ids: Sequence[int], rows: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("token_ids", torch.tensor(list(token_ids), dtype=torch.long))
        self.rows = nn.Parameter(rows.detach().clone())  # (N, D)

    def embed(self, input_ids: torch.Tensor, embedded: torch.Tensor, scale: float) -> torch.Tensor:
        """(B, L) ids and their (B, L, D) embeddings → embeddings with ``rows`` at added ids."""
        match: torch.Tensor = input_ids[..., None] == self.token_ids  # (B, L, N)
        mine = match.to(self.rows.dtype) @ self.rows * scale
        return torch.where(match.any(-1, keepdim=True), mine.to(embedded.dtype), embedded)

    def logits(self, hidden: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """(B, L, D) hidden states and (B, L, V) logits → logits of added ids from ``rows``."""
        logits[..., self.token_ids] = (hidden @ self.rows.to(hidden.dtype).T).to(logits.dtype)
        return logits


def _embed_hook(module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
    rows = cast(AddedTokenRows, module.added_rows)
    return rows.embed(args[0], output, float(getattr(module, "embed_scale", 1.0) or 1.0))


def _logits_hook(module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
    # The embedding is found through the output layer's own attribute, not a closure, so that
    # a deep copy of the model hooks its own copy of the rows.
    rows = cast(AddedTokenRows, module.__dict__[_EMBEDDING].added_rows)
    return rows.logits(args[0], output)


_EMBEDDING = "_samu_tied_embedding"


def added_token_rows(model: nn.Module) -> AddedTokenRows | None:
    """The :class:`AddedTokenRows` of an ``MBartForCausalLM``, if attached."""
    rows = getattr(mbart_decoder(model).embed_tokens, "added_rows", None)
    return rows if isinstance(rows, AddedTokenRows) else None


def attach_added_rows(model: MBartForCausalLM, token_ids: Sequence[int]) -> AddedTokenRows:
    """Give ``model`` trainable rows for ``token_ids``, starting from the embedding's rows."""
    if added_token_rows(model) is not None:
        raise ValueError("the decoder already has added token rows")
    embedding = mbart_decoder(model).embed_tokens
    ids = torch.tensor(list(token_ids), dtype=torch.long, device=embedding.weight.device)
    rows = AddedTokenRows(token_ids, embedding.weight.detach()[ids])
    embedding.added_rows = rows
    embedding.register_forward_hook(_embed_hook)
    # A plain attribute, not a submodule: the rows stay one parameter in the state dict.
    object.__setattr__(model.lm_head, _EMBEDDING, embedding)
    model.lm_head.register_forward_hook(_logits_hook)
    return rows


def sync_added_rows(model: nn.Module) -> None:
    """Copy the trained added rows into the (frozen) embedding weight, in place."""
    rows = added_token_rows(model)
    if rows is not None:
        with torch.no_grad():
            mbart_decoder(model).embed_tokens.weight[rows.token_ids] = rows.rows.to(
                mbart_decoder(model).embed_tokens.weight.dtype
            )


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
    """Apply ``DecoderConfig.trainable`` to an ``MBartForCausalLM``; added token rows
    (:class:`AddedTokenRows`) train unless the decoder is ``frozen``."""
    if trainable == "lna":
        apply_lna_d(model)
    elif trainable in ("full", "frozen"):
        model.requires_grad_(trainable == "full")
    else:
        raise ValueError(f"unknown decoder trainable setting {trainable!r}")
    rows = added_token_rows(model)
    if rows is not None:
        rows.requires_grad_(trainable != "frozen")


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
