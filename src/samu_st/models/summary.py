"""Parameter counts of the speech translator, per module group, and their relation to the paper.

The paper (§2) says its translator "consists of 700M trainable parameters. We only fine-tune
75M." Built from the architectures (XLS-R 300M + MBART-50's decoder, nothing downloaded, on
the ``meta`` device so no memory is allocated), the parts are:

- encoder (XLS-R 300M, frozen in ``adapters`` mode): 315.4M;
- bottleneck adapters, 2 per layer × 24 layers, hidden 256: 25.2M (train);
- decoder cross-attention, 12 layers: 50.4M (train) and the decoder's 38 layer norms: 0.08M
  (train): adapters + cross-attention + layer norms = 75.7M, the paper's "75M";
- decoder self-attention + feed-forward: 151.1M (frozen);
- token embedding 250,054 (+2 new language tokens) × 1024 = 256.1M, shared with the output
  projection (counted once), and learned positions 1.05M (frozen);
- length adaptor: 6.3M per layer and ``enc_to_dec_proj`` (only when sizes differ): the paper
  describes neither, so ``configs/paper.yaml`` has no length adaptor.

Total 799.3M. The paper's "700M" matches no exact split (without the 257M embeddings it is
542.2M); the MBART *encoder* is not part of the model, and it is not counted here either.

Other encoder families (``model.encoder.family``, :mod:`samu_st.models.encoder_families`) are
counted the same way, at their paper sizes (HuBERT / WavLM large, w2v-BERT 2.0, Whisper
large-v2's encoder); a note names the family.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn
from transformers import (
    MBartConfig,
    MBartForCausalLM,
    SpeechEncoderDecoderModel,
    Wav2Vec2Model,
)

from samu_st.models.adapters import bottleneck_adapters
from samu_st.models.decoder import (
    DecoderConfig,
    as_decoder_config,
    lna_d_modules,
    mbart_config,
    mbart_decoder,
)
from samu_st.models.encoder import read_encoder_config, wav2vec2_config
from samu_st.models.encoder_families import get_family
from samu_st.models.tokenizer import ALL_LANGUAGES, TargetTokenizer, mbart50_language_token
from samu_st.models.translator import TranslatorConfig, assemble_translator, encoder_from_config

GROUPS = (
    "encoder",
    "bottleneck_adapters",
    "length_adaptor",
    "projection",
    "decoder_cross_attention",
    "decoder_layer_norms",
    "decoder_other",
    "embeddings",
)
GROUP_HELP = {
    "encoder": "speech encoder (family: see the note)",
    "bottleneck_adapters": "2 per encoder layer (paper §2)",
    "length_adaptor": "stride-2 Conv1d + GLU layers",
    "projection": "encoder → decoder size (enc_to_dec_proj)",
    "decoder_cross_attention": "LNA-D: trains",
    "decoder_layer_norms": "LNA-D: trains",
    "decoder_other": "self-attention + feed-forward",
    "embeddings": "token embedding = output projection (tied), positions",
}


@dataclass(frozen=True)
class GroupCount:
    total: int
    trainable: int


@dataclass(frozen=True)
class ModelSummary:
    """Parameter counts; each shared tensor (tied embedding/output) is counted once."""

    total: int
    trainable: int
    groups: dict[str, GroupCount]
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        groups = {k: dataclasses.asdict(v) for k, v in self.groups.items()}
        return {"total": self.total, "trainable": self.trainable, "groups": groups}


def _group_of(model: SpeechEncoderDecoderModel) -> dict[int, str]:
    """Parameter id → group, by module identity (never by parameter-name substrings)."""
    owner: dict[int, str] = {}

    def claim(module: nn.Module | None, group: str) -> None:
        if module is not None:
            for p in module.parameters():
                owner.setdefault(id(p), group)

    encoder = cast(Wav2Vec2Model, model.encoder)
    for adapter in bottleneck_adapters(encoder):
        claim(adapter, "bottleneck_adapters")
    claim(encoder.adapter, "length_adaptor")
    claim(encoder, "encoder")
    claim(getattr(model, "enc_to_dec_proj", None), "projection")
    decoder = mbart_decoder(model.decoder)
    claim(decoder.embed_tokens, "embeddings")
    claim(decoder.embed_positions, "embeddings")
    claim(model.decoder.get_output_embeddings(), "embeddings")
    for path, module in lna_d_modules(decoder).items():
        claim(
            module,
            "decoder_cross_attention" if path.endswith("encoder_attn") else "decoder_layer_norms",
        )
    claim(model.decoder, "decoder_other")
    return owner


def summarize(model: SpeechEncoderDecoderModel) -> ModelSummary:
    """Total and trainable parameters per group of :data:`GROUPS`."""
    owner = _group_of(model)
    totals = dict.fromkeys(GROUPS, 0)
    trainable = dict.fromkeys(GROUPS, 0)
    for param in model.parameters():  # deduplicates tied parameters
        group = owner[id(param)]
        totals[group] += param.numel()
        if param.requires_grad:
            trainable[group] += param.numel()
    groups = {g: GroupCount(totals[g], trainable[g]) for g in GROUPS}
    return ModelSummary(sum(totals.values()), sum(trainable.values()), groups)


def _existing(path: str | None, marker: str = "config.json") -> Path | None:
    return Path(path) if path is not None and (Path(path) / marker).is_file() else None


def default_vocab_size(cfg: DecoderConfig) -> int:
    """Vocabulary when no tokenizer is at hand: MBART-50's 250,054 plus one new token per
    CoVoST-2 language MBART-50 lacks (paper preset), else 1,000 + one per language."""
    if cfg.preset == "paper":
        new = sum(1 for code in ALL_LANGUAGES if mbart50_language_token(code) is None)
        return 250054 + new
    return 1000 + len(ALL_LANGUAGES)


def translator_on_meta(
    cfg: TranslatorConfig, from_architecture: bool = False, vocab_size: int | None = None
) -> tuple[SpeechEncoderDecoderModel, list[str]]:
    """The translator of ``cfg`` on the ``meta`` device (no memory, no weights read), and notes.

    Uses the ``config.json`` (and tokenizer) of pretrained folders that exist, unless
    ``from_architecture``; otherwise the presets.
    """
    notes: list[str] = []
    enc_path = None if from_architecture else _existing(cfg.encoder.pretrained)
    dec_path = None if from_architecture else _existing(cfg.decoder.pretrained)
    tok_path = cfg.tokenizer or cfg.decoder.pretrained
    tok_dir = None if from_architecture else _existing(tok_path, "tokenizer_config.json")
    for name, wanted, found in (
        ("encoder", cfg.encoder.pretrained, enc_path),
        ("decoder", cfg.decoder.pretrained, dec_path),
    ):
        if wanted is not None and found is None:
            why = "--from-architecture" if from_architecture else "no such folder here"
            notes.append(f"{name}: {wanted} not read ({why}); counted from the preset architecture")
    tokenizer = (
        TargetTokenizer.load(tok_dir) if tok_dir is not None and vocab_size is None else None
    )
    if tokenizer is not None:
        vocab_size = len(tokenizer)
    family = get_family(cfg.encoder.family)
    if enc_path is not None:
        enc_config = read_encoder_config(enc_path, family.name)
    elif family.name == "wav2vec2":
        enc_config = wav2vec2_config(cfg.encoder)
    else:
        enc_config = family.config(cfg.encoder.size)
    notes.append(f"encoder: {family.name}, {family.description}")
    if dec_path is not None:
        dec_config = MBartConfig.from_pretrained(str(dec_path), local_files_only=True)
        dec_config.vocab_size = max(dec_config.vocab_size, vocab_size or 0)
    else:
        vocab_size = vocab_size or default_vocab_size(cfg.decoder)
        dec_config = mbart_config(cfg.decoder.preset, vocab_size)
    if tokenizer is None:
        notes.append(f"vocabulary: {dec_config.vocab_size} tokens (no tokenizer read)")
    with torch.device("meta"):
        encoder = encoder_from_config(enc_config)
        decoder = MBartForCausalLM(as_decoder_config(dec_config, cfg.decoder))
        model = assemble_translator(encoder, decoder, cfg, tokenizer)
    return model, notes


def paper_comparison(summary: ModelSummary) -> list[str]:
    """Lines relating the counts to the paper's 700M / 75M (§2)."""
    g = summary.groups
    core = (
        g["bottleneck_adapters"].trainable
        + g["decoder_cross_attention"].trainable
        + g["decoder_layer_norms"].trainable
    )
    extra = summary.trainable - core
    return [
        "paper (§2): ~700M parameters, 75M fine-tuned.",
        f"adapters + decoder cross-attention + layer norms = {core / 1e6:.1f}M trainable "
        "(the paper's 75M counts these);"
        + (
            f" the other {extra / 1e6:.1f}M trainable are the length adaptor/projection"
            " or fully trained parts, which the paper does not describe."
            if extra
            else ""
        ),
        f"the token embedding (= tied output projection) holds {g['embeddings'].total / 1e6:.1f}M "
        f"of the {summary.total / 1e6:.1f}M total (without it: "
        f"{(summary.total - g['embeddings'].total) / 1e6:.1f}M); the MBART encoder is not part "
        "of the model.",
    ]


def format_summary(summary: ModelSummary) -> str:
    """A table: group, total, trainable, frozen, what it is."""
    lines = [f"{'group':<26}{'total':>14}{'trainable':>14}{'frozen':>14}  note"]
    for name, count in summary.groups.items():
        frozen = count.total - count.trainable
        lines.append(
            f"{name:<26}{count.total:>14,}{count.trainable:>14,}{frozen:>14,}  {GROUP_HELP[name]}"
        )
    frozen_all = summary.total - summary.trainable
    lines.append(f"{'TOTAL':<26}{summary.total:>14,}{summary.trainable:>14,}{frozen_all:>14,}")
    lines.append(
        f"total {summary.total / 1e6:.1f}M parameters, trainable {summary.trainable / 1e6:.1f}M"
    )
    lines.extend(f"note: {n}" for n in summary.notes)
    return "\n".join(lines)


def summarize_config(
    cfg: TranslatorConfig, from_architecture: bool = False, vocab_size: int | None = None
) -> ModelSummary:
    """:func:`summarize` of the translator ``cfg`` describes, built on ``meta``, with notes
    (what was not read, and the comparison with the paper's counts)."""
    model, notes = translator_on_meta(cfg, from_architecture, vocab_size)
    counts = summarize(model)
    notes.extend(paper_comparison(counts))
    return dataclasses.replace(counts, notes=tuple(notes))
