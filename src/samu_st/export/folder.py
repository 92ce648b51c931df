"""``export_translator``: a step-3 ``final/`` folder → a Hugging Face folder.

- ``-F`` (no bottleneck adapters): a plain ``SpeechEncoderDecoderModel`` folder; plain
  transformers loads it with no missing or unexpected keys, and
  ``pipeline("automatic-speech-recognition", model=DIR)`` translates with it.
- ``-A``: the same, but the encoder's ``model_type`` is :data:`ENCODER_MODEL_TYPE`, which only
  ``import samu_st`` registers (:mod:`.hooks`): plain transformers refuses the folder
  ("Unrecognized model identifier: ...") instead of dropping the adapter weights.

Beside the weights: ``preprocessor_config.json`` (``Wav2Vec2FeatureExtractor``, 16 kHz, the
zero-mean unit-variance normalisation of :func:`samu_st.audio.normalize`), the tokenizer, a
``generation_config.json`` whose start token and forced tokens give the decoder prefix of one
language, and in ``config.json`` the prefix of every language under :data:`PREFIXES_KEY`.
The samu files (``samu_translator.json``, ...) are kept, so
:func:`samu_st.models.translator.load_translator` reads the folder too.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import GenerationConfig, SpeechEncoderDecoderModel, Wav2Vec2Config

from samu_st.atomic import atomic_folder
from samu_st.decoding.translate import max_new_tokens_for
from samu_st.errors import SamuError
from samu_st.export.card import trained_languages, write_model_card
from samu_st.export.hf_config import ENCODER_MODEL_TYPE
from samu_st.models.adapters import has_bottleneck_adapters
from samu_st.models.ctc import default_feature_extractor
from samu_st.models.decoder import sync_added_rows
from samu_st.models.tokenizer import TARGET_LANGUAGE, TargetTokenizer
from samu_st.models.translator import (
    CONFIG_FILE,
    PREFIX_FILE,
    PREFIX_KEY,
    decoder_prefix_mode,
    load_translator,
)

PREFIXES_KEY = "samu_language_prefixes"  # config.json: language → decoder prefix ids
LANGUAGE_KEY = "samu_language"  # generation_config.json: the language its prefix is for
COPIED = (CONFIG_FILE, PREFIX_FILE, "train_hours.json")
# A bias that makes a token certain after a given one (finite: fp16 logits stay finite).
FORCE_BIAS = 1.0e4


@dataclass(frozen=True)
class ExportOptions:
    """What :func:`export_translator` writes beyond the weights."""

    # source language whose prefix generation_config forces; None: the first trained on
    language: str | None = None
    num_beams: int = 5  # beam size of generation_config (1: greedy), as `samu-st translate`
    max_new_tokens: int = 200  # tokens generated after the prefix (capped by the decoder)
    results: str | None = None  # results.json of `samu-st evaluate`, for the model card
    command: str | None = None  # the command that made the model, for the model card


def source_languages(tokenizer: TargetTokenizer) -> list[str]:
    """The source languages the tokenizer has a token for, sorted."""
    return sorted(code for code in tokenizer.language_ids if code != TARGET_LANGUAGE)


def _weights(model: SpeechEncoderDecoderModel) -> dict[str, Any]:
    # The trained rows of added tokens are copied into the embedding; their own module
    # (ours, not transformers') is left out, so a plain load sees no unexpected key.
    sync_added_rows(model.decoder)
    return {k: v for k, v in model.state_dict().items() if ".added_rows." not in k}


def generation_config(
    tokenizer: TargetTokenizer, prefix: list[int], opts: ExportOptions, new_tokens: int
) -> GenerationConfig:
    """Search settings whose forced tokens give ``prefix`` (``[</s>, a]`` or ``[</s>, a, b]``):
    ``a`` by ``forced_bos_token_id``, ``b`` by a sequence bias after ``a``."""
    bias = [[[prefix[1], prefix[2]], FORCE_BIAS]] if len(prefix) == 3 else None
    return GenerationConfig(
        decoder_start_token_id=prefix[0],
        forced_bos_token_id=prefix[1],
        sequence_bias=bias,
        bos_token_id=tokenizer.bos_id,
        eos_token_id=tokenizer.eos_id,
        pad_token_id=tokenizer.pad_id,
        num_beams=opts.num_beams,
        early_stopping=False,
        do_sample=False,
        max_new_tokens=new_tokens + len(prefix) - 1,  # the forced tokens count as new
    )


def _config_json(model: SpeechEncoderDecoderModel, prefixes: dict[str, list[int]]) -> str:
    config = model.config.to_dict()
    config[PREFIXES_KEY] = prefixes
    if has_bottleneck_adapters(model.encoder):
        config["encoder"]["model_type"] = ENCODER_MODEL_TYPE
    return json.dumps(config, indent=2, sort_keys=True) + "\n"


def _write(tmp: Path, model_dir: Path, opts: ExportOptions) -> str:
    model, tokenizer, _ = load_translator(model_dir)
    encoder_type = getattr(model.config.encoder, "model_type", None)
    if not isinstance(model.config.encoder, Wav2Vec2Config):  # also an -A export's subclass
        # The -A folder format re-registers Wav2Vec2Model + adapters with transformers; the
        # other families (features computed inside samu-st's wrapper) have no such format yet.
        raise SamuError(
            f"{model_dir}: export writes wav2vec2-encoder translators only; this one's encoder "
            f"is {encoder_type!r}. Use the folder itself (samu-st translate/evaluate, "
            "samu_st.models.translator.load_translator)"
        )
    languages = source_languages(tokenizer)
    # default: the first language trained on, else the first the tokenizer has
    language = opts.language or next(iter(trained_languages(model_dir) or languages), None)
    if language is None or language not in languages:
        raise SamuError(f"{model_dir}: no language {language!r}; it has {' '.join(languages)}")
    mode = decoder_prefix_mode(model)
    prefixes = {lang: tokenizer.prefix_ids(lang, mode) for lang in languages}
    model.save_pretrained(str(tmp), state_dict=_weights(model))
    (tmp / "config.json").write_text(_config_json(model, prefixes), encoding="utf-8")
    prefix = prefixes[language]
    new_tokens = max_new_tokens_for(model, opts.max_new_tokens, len(prefix))
    gen = generation_config(tokenizer, prefix, opts, new_tokens)
    setattr(gen, PREFIX_KEY, mode)
    setattr(gen, LANGUAGE_KEY, language)
    gen.save_pretrained(str(tmp))
    default_feature_extractor().save_pretrained(str(tmp))  # the normalisation ours uses
    tokenizer.save(tmp)
    for name in COPIED:
        if (model_dir / name).is_file():
            shutil.copy2(model_dir / name, tmp / name)
    return language


def export_translator(
    model_dir: str | Path, out_dir: str | Path, options: ExportOptions | None = None
) -> Path:
    """Write the Hugging Face folder of the translator in ``model_dir`` (a step-3 ``final/``)
    to ``out_dir``, atomically (a temporary folder, then a rename), with a model card."""
    opts = options or ExportOptions()
    source, target = Path(model_dir), Path(out_dir)
    with atomic_folder(target, point="export") as tmp:
        language = _write(tmp, source, opts)
        write_model_card(tmp, target.name, source, language, opts)
    return target
