"""The MBART-50 release format: language codes, config fields, tokenizer files.

``facebook/mbart-large-50*`` keep 52 language codes after the sentencepiece pieces (id =
pieces + 1 + index, fairseq's offset), ``<mask>`` last; the tokenizer folder holds
``sentencepiece.bpe.model`` (a Unigram model despite the name), ``tokenizer_config.json`` and
``special_tokens_map.json``. :func:`write_mbart50_tokenizer` writes that layout for a
sentencepiece model trained on given texts: the shipped mini-MBART-50
(:mod:`samu_st.release`) and the tests' stand-in of the release both use it, so the mini path
loads its decoder exactly as the paper path loads MBART-50.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import sentencepiece as spm
from transformers import GenerationConfig, MBart50Tokenizer

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
RELEASE_PIECES = 250_000  # sentencepiece pieces of the release

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


def code_id(code: str, pieces: int) -> int:
    """The id of an MBART-50 language code in a vocabulary of ``pieces`` sentencepiece pieces."""
    return pieces + FAIRSEQ_OFFSET + MBART50_CODES.index(code)


def vocab_size(pieces: int) -> int:
    """Pieces + 1 (fairseq's extra <pad>) + 52 codes + <mask> (250,054 in the release)."""
    return pieces + FAIRSEQ_OFFSET + len(MBART50_CODES) + 1


def sentencepiece_model(texts: Iterable[str], pieces: int) -> bytes:
    """A Unigram sentencepiece model of ``pieces`` pieces trained on ``texts`` (one thread:
    deterministic)."""
    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_writer=buffer,
        vocab_size=pieces,
        model_type="unigram",  # the release's "bpe" file holds a Unigram model
        character_coverage=0.9995,
        input_sentence_size=2_000_000,
        shuffle_input_sentence=False,
        minloglevel=2,
        num_threads=1,
    )
    return buffer.getvalue()


def write_mbart50_tokenizer(folder: str | Path, texts: Iterable[str], pieces: int) -> Path:
    """The release's tokenizer files in ``folder`` (created), for a model trained on ``texts``;
    checks that the ids follow the release's layout (en_XX = pieces + 4)."""
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    (path / "sentencepiece.bpe.model").write_bytes(sentencepiece_model(texts, pieces))
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
    (path / "special_tokens_map.json").write_text(json.dumps(specials, indent=2))
    (path / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    tokenizer = MBart50Tokenizer.from_pretrained(str(path), local_files_only=True)
    if len(tokenizer) != vocab_size(pieces) or tokenizer.convert_tokens_to_ids("en_XX") != code_id(
        "en_XX", pieces
    ):
        raise RuntimeError(f"{path}: the tokenizer's ids differ from the MBART-50 layout")
    return path


def generation_config(pieces: int) -> GenerationConfig:
    """The release's generation_config.json (its MT search settings)."""
    return GenerationConfig(
        bos_token_id=0,
        decoder_start_token_id=2,
        early_stopping=True,
        eos_token_id=2,
        forced_bos_token_id=code_id("en_XX", pieces),
        forced_eos_token_id=2,
        max_length=200,
        num_beams=5,
        pad_token_id=1,
    )
