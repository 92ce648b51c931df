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

import io
import json
from pathlib import Path
from typing import Any

import sentencepiece as spm
import torch
from num2words import num2words
from transformers import (
    GenerationConfig,
    MBart50Tokenizer,
    MBartConfig,
    MBartForConditionalGeneration,
)

# facebook/mbart-large-50 language codes, in the release's order (their ids follow it).
MBART50_CODES: tuple[str, ...] = (
    "ar_AR",
    "cs_CZ",
    "de_DE",
    "en_XX",
    "es_XX",
    "et_EE",
    "fi_FI",
    "fr_XX",
    "gu_IN",
    "hi_IN",
    "it_IT",
    "ja_XX",
    "kk_KZ",
    "ko_KR",
    "lt_LT",
    "lv_LV",
    "my_MM",
    "ne_NP",
    "nl_XX",
    "ro_RO",
    "ru_RU",
    "si_LK",
    "tr_TR",
    "vi_VN",
    "zh_CN",
    "af_ZA",
    "az_AZ",
    "bn_IN",
    "fa_IR",
    "he_IL",
    "hr_HR",
    "id_ID",
    "ka_GE",
    "km_KH",
    "mk_MK",
    "ml_IN",
    "mn_MN",
    "mr_IN",
    "pl_PL",
    "ps_AF",
    "pt_XX",
    "sv_SE",
    "sw_KE",
    "ta_IN",
    "te_IN",
    "th_TH",
    "tl_XX",
    "uk_UA",
    "ur_PK",
    "xh_ZA",
    "gl_ES",
    "sl_SI",
)
FAIRSEQ_OFFSET = 1  # fairseq's <s> <pad> </s> <unk> take 4 ids where sentencepiece has 3
SENTENCEPIECE_PIECES = 160  # the release has 250,000

# The released config.json, sizes aside.
MANY_TO_ONE_FIELDS: dict[str, Any] = {
    "_num_labels": 3,
    "activation_dropout": 0.0,
    "activation_function": "gelu",
    "add_bias_logits": False,
    "add_final_layer_norm": True,
    "architectures": ["MBartForConditionalGeneration"],
    "attention_dropout": 0.0,
    "bos_token_id": 0,
    "classif_dropout": 0.0,
    "classifier_dropout": 0.0,
    "decoder_layerdrop": 0.0,
    "decoder_start_token_id": 2,
    "dropout": 0.1,
    "early_stopping": True,
    "encoder_layerdrop": 0.0,
    "eos_token_id": 2,
    "forced_eos_token_id": 2,
    "gradient_checkpointing": False,
    "init_std": 0.02,
    "is_encoder_decoder": True,
    "max_length": 200,
    "model_type": "mbart",
    "normalize_before": True,
    "normalize_embedding": True,
    "num_beams": 5,
    "output_past": True,
    "pad_token_id": 1,
    "scale_embedding": True,
    "static_position_embeddings": False,
    "use_cache": True,
}
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
    return pieces + FAIRSEQ_OFFSET + MBART50_CODES.index(code)


def vocab_size(pieces: int = SENTENCEPIECE_PIECES) -> int:
    """Pieces + 1 (fairseq's extra <pad>) + 52 codes + <mask> (250,054 in the release)."""
    return pieces + FAIRSEQ_OFFSET + len(MBART50_CODES) + 1


def _sentences() -> list[str]:
    """A few hundred sentences: English numbers (the demo's targets) and a few languages."""
    out = [num2words(i) for i in range(300)]
    out += [num2words(i, lang=lang) for lang in ("fr", "de", "es") for i in range(0, 300, 7)]
    return [*out, "hello world", "the cat sat on the mat", "good morning to you all"]


def _sentencepiece_model() -> bytes:
    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_sentences()),
        model_writer=buffer,
        vocab_size=SENTENCEPIECE_PIECES,
        model_type="unigram",  # the release's "bpe" file holds a Unigram model
        minloglevel=2,
        num_threads=1,
    )
    return buffer.getvalue()


def _tokenizer_files(folder: Path) -> None:
    """The release's tokenizer files: sentencepiece model, tokenizer config, special tokens."""
    (folder / "sentencepiece.bpe.model").write_bytes(_sentencepiece_model())
    mask = {"content": "<mask>", "lstrip": True, "normalized": True, "rstrip": False}
    specials = {
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "sep_token": "</s>",
        "pad_token": "<pad>",
        "cls_token": "<s>",
        "mask_token": {**mask, "single_word": False},
        "additional_special_tokens": list(MBART50_CODES),
    }
    config = {
        **{k: v for k, v in specials.items() if k != "additional_special_tokens"},
        "src_lang": None,
        "tgt_lang": None,
        "language_codes": "ML50",
        "sp_model_kwargs": {},
        "model_max_length": 1024,
        "tokenizer_class": "MBart50Tokenizer",
    }
    (folder / "special_tokens_map.json").write_text(json.dumps(specials, indent=2))
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))


def generation_config() -> GenerationConfig:
    """The release's generation_config.json (its MT search settings)."""
    return GenerationConfig(
        bos_token_id=0,
        decoder_start_token_id=2,
        early_stopping=True,
        eos_token_id=2,
        forced_bos_token_id=code_id("en_XX"),
        forced_eos_token_id=2,
        max_length=200,
        num_beams=5,
        pad_token_id=1,
    )


def write_mbart50(folder: str | Path, legacy: bool = False, seed: int = 0) -> Path:
    """Write the stand-in into ``folder`` (created); returns it.

    ``legacy``: the release's layout (``pytorch_model.bin``, sentencepiece model + JSON
    configs); otherwise ``save_pretrained``'s (``model.safetensors``, ``tokenizer.json``).
    """
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    _tokenizer_files(path)
    tokenizer = MBart50Tokenizer.from_pretrained(str(path), local_files_only=True)
    if len(tokenizer) != vocab_size() or tokenizer.convert_tokens_to_ids("en_XX") != code_id(
        "en_XX"
    ):
        raise RuntimeError("the stand-in tokenizer's ids differ from the release's layout")
    fields = {**MANY_TO_ONE_FIELDS, **TINY_SIZES, "forced_bos_token_id": code_id("en_XX")}
    config = MBartConfig(vocab_size=vocab_size(), **fields)
    torch.manual_seed(seed)
    model = MBartForConditionalGeneration(config).eval()
    model.generation_config = generation_config()
    if legacy:
        model.config.to_json_file(str(path / "config.json"))
        model.generation_config.save_pretrained(str(path))
        state = {k: v.clone() for k, v in model.state_dict().items()}  # every tied copy
        torch.save(state, path / "pytorch_model.bin")
        return path
    model.save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path
