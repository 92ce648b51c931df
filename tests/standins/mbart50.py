"""A tiny ``facebook/mbart-large-50-many-to-one-mmt`` written by transformers' own classes.

Every field of the released ``config.json`` is kept (``normalize_before``,
``add_final_layer_norm``, ``scale_embedding``, ``decoder_start_token_id: 2``,
``forced_bos_token_id`` of en_XX, the MT search settings ``num_beams: 5``,
``early_stopping: true``, ``max_length: 200``); only the sizes shrink. The tokenizer is an
MBart-50 sentencepiece (Unigram) tokenizer trained here on a few hundred sentences, with the
52 real language codes placed after the sentencepiece pieces (then ``<mask>``), as in the
release: id = pieces + 1 + index (fairseq's offset), so that en_XX is the 4th code.

Two folder layouts:

- ``legacy=False``: today's ``save_pretrained`` output (``model.safetensors``,
  ``tokenizer.json`` ...);
- ``legacy=True``: the release's files: ``pytorch_model.bin`` with every tied copy of the
  embedding (``model.shared``, encoder/decoder ``embed_tokens``, ``lm_head``),
  ``sentencepiece.bpe.model``, ``tokenizer_config.json``, ``special_tokens_map.json``.

Both hold ``config.json`` and ``generation_config.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from num2words import num2words
from transformers import MBart50Tokenizer, MBartConfig, MBartForConditionalGeneration

from samu_st.models import mbart50_format
from samu_st.models.mbart50_format import MANY_TO_ONE_FIELDS, MBART50_CODES, write_mbart50_tokenizer

__all__ = ["MBART50_CODES", "code_id", "vocab_size", "write_mbart50"]

SENTENCEPIECE_PIECES = 160  # the release has 250,000
# The sizes of the stand-in (the release: d_model 1024, 12 + 12 layers, 16 heads, FFN 4096).
TINY_SIZES: dict[str, Any] = {
    "d_model": 32,
    "encoder_layers": 2,
    "decoder_layers": 2,
    "encoder_attention_heads": 2,
    "decoder_attention_heads": 2,
    "encoder_ffn_dim": 64,
    "decoder_ffn_dim": 64,
    "max_position_embeddings": 128,
}


def code_id(code: str, pieces: int = SENTENCEPIECE_PIECES) -> int:
    """The id of an MBART-50 language code in a vocabulary of ``pieces`` sentencepiece pieces."""
    return mbart50_format.code_id(code, pieces)


def vocab_size(pieces: int = SENTENCEPIECE_PIECES) -> int:
    """Pieces + 1 (fairseq's extra <pad>) + 52 codes + <mask> (250,054 in the release)."""
    return mbart50_format.vocab_size(pieces)


def _sentences() -> list[str]:
    """A few hundred sentences: English numbers (the demo's targets) and a few languages."""
    out = [num2words(i) for i in range(300)]
    out += [num2words(i, lang=lang) for lang in ("fr", "de", "es") for i in range(0, 300, 7)]
    return [*out, "hello world", "the cat sat on the mat", "good morning to you all"]


def write_mbart50(folder: str | Path, legacy: bool = False, seed: int = 0) -> Path:
    """Write the stand-in into ``folder`` (created); returns it.

    ``legacy``: the release's layout (``pytorch_model.bin``, sentencepiece model + JSON
    configs); otherwise ``save_pretrained``'s (``model.safetensors``, ``tokenizer.json``).
    """
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    write_mbart50_tokenizer(path, _sentences(), SENTENCEPIECE_PIECES)
    tokenizer = MBart50Tokenizer.from_pretrained(str(path), local_files_only=True)
    fields = {**MANY_TO_ONE_FIELDS, **TINY_SIZES, "forced_bos_token_id": code_id("en_XX")}
    config = MBartConfig(vocab_size=vocab_size(), **fields)
    torch.manual_seed(seed)
    model = MBartForConditionalGeneration(config).eval()
    model.generation_config = mbart50_format.generation_config(SENTENCEPIECE_PIECES)
    if legacy:
        model.config.to_json_file(str(path / "config.json"))
        model.generation_config.save_pretrained(str(path))
        state = {k: v.clone() for k, v in model.state_dict().items()}  # every tied copy
        torch.save(state, path / "pytorch_model.bin")
        return path
    model.save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path
