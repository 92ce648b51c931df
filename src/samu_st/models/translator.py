"""The speech translator of step 3: wav2vec2/XLS-R encoder (+ bottleneck adapters) → length
adaptor → projection → MBART decoder with LNA-D, as one transformers
``SpeechEncoderDecoderModel`` (so ``generate()`` gives greedy and beam search).

- Encoder: ``Wav2Vec2Model`` from :mod:`samu_st.models.encoder` (a local XLS-R copy, the
  encoder saved by step 1/2, or a preset); mode ``adapters`` (frozen + two bottleneck adapters
  per layer, paper §2), ``full`` (all but the conv front end) or ``frozen``.
- Length adaptor: transformers' own ``Wav2Vec2Adapter`` (``add_adapter``: stride-2 Conv1d + GLU
  layers), made padding-exact by :class:`LengthAdaptor`. It is new, so it always trains.
- ``enc_to_dec_proj``: created by transformers when encoder and decoder sizes differ; trains.
- Decoder: :func:`samu_st.models.decoder.build_mbart`, LNA-D by default.
- Conditioning on the language: the decoder prefix of ``DecoderConfig.prefix`` (source
  ``[</s>, <src>]``, target ``[</s>, en_XX]`` or both ``[</s>, <src>, en_XX]``,
  :func:`~samu_st.models.tokenizer.decoder_prefix`), the same in training and in both search
  engines: the model carries its mode (:func:`decoder_prefix_mode`).

Saved as ONE folder (:func:`save_translator` / :func:`load_translator`): ``config.json`` (the
transformers config), ``samu_translator.json`` (our :class:`TranslatorConfig`),
``model.safetensors`` (every weight, adapters and added language rows included),
``generation_config.json`` (``samu_decoder_prefix``), ``decoder_prefix.json`` (the mode and the
prefix ids of every language) and the tokenizer files.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, cast

import torch
from safetensors import safe_open
from safetensors.torch import load_model, save_model
from torch import nn
from transformers import (
    GenerationConfig,
    MBartConfig,
    MBartForCausalLM,
    PreTrainedModel,
    SpeechEncoderDecoderConfig,
    SpeechEncoderDecoderModel,
    Wav2Vec2Config,
    Wav2Vec2Model,
)

from samu_st.atomic import atomic_folder
from samu_st.config import from_dict, to_dict
from samu_st.errors import ModelLoadError
from samu_st.models.adapters import (
    CONFIG_KEY,
    add_bottleneck_adapters,
    has_bottleneck_adapters,
)
from samu_st.models.decoder import (
    DecoderConfig,
    added_token_rows,
    attach_added_rows,
    build_mbart,
    set_decoder_trainable,
    sync_added_rows,
)
from samu_st.models.encoder import EncoderConfig, apply_encoder_mode, build_encoder
from samu_st.models.encoder_families import family_of_model_type
from samu_st.models.length_adaptor import (
    LengthAdaptor,
    attach_length_adaptor,
    length_adaptor_output_lengths,
)
from samu_st.models.loading import require_local_folder
from samu_st.models.tokenizer import (
    TARGET_LANGUAGE,
    DecoderTargets,
    PrefixMode,
    TargetTokenizer,
    generate_kwargs,
    generation_prefix,
    make_decoder_targets,
)

__all__ = [
    "DecoderTargets",
    "LengthAdaptor",
    "LoadedTranslator",
    "TranslatorConfig",
    "assemble_translator",
    "build_translator",
    "decoder_prefix_mode",
    "encoder_output_lengths",
    "generate_kwargs",
    "generation_prefix",
    "length_adaptor_output_lengths",
    "load_translator",
    "make_decoder_targets",
    "save_translator",
    "set_trainable",
    "translate",
]

CONFIG_FILE = "samu_translator.json"
WEIGHTS_FILE = "model.safetensors"
PREFIX_FILE = "decoder_prefix.json"  # the prefix mode and ids, for people and tests to read
PREFIX_KEY = "samu_decoder_prefix"  # in the model's config and generation config
ADDED_ROWS_KEY = "decoder.model.decoder.embed_tokens.added_rows.token_ids"


@dataclass(frozen=True)
class TranslatorConfig:
    """The speech translator: encoder, length adaptor, decoder and target tokenizer."""

    # Speech encoder; `mode: adapters` is the paper's samu-xlsr-0.3B-A (§2), `full` its -F.
    encoder: EncoderConfig = field(default_factory=lambda: EncoderConfig(mode="adapters"))
    # MBART decoder; `trainable: lna` (cross-attention + layer norms) for every model (§3).
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    # Stride-2 Conv1d + GLU layers between encoder and decoder (each halves the frame rate);
    # 0 = none. Not described in the paper (see configs/paper.yaml).
    length_adaptor_layers: int = 2
    # Folder of the target tokenizer; None: the decoder's pretrained folder (MBART-50).
    tokenizer: str | None = None


def encoder_output_lengths(model: SpeechEncoderDecoderModel, lengths: torch.Tensor) -> torch.Tensor:
    """(B,) input lengths in samples → (B,) frames the decoder attends to (after the adaptor)."""
    encoder = cast(Wav2Vec2Model, model.encoder)
    out = encoder._get_feat_extract_output_lengths(cast(torch.LongTensor, lengths))
    return out.to(torch.long)


def _mark_initialized(module: nn.Module) -> None:
    # SpeechEncoderDecoderModel.post_init re-initialises every module not flagged by
    # transformers, which would overwrite loaded weights and the zero-initialised adapters.
    for sub in module.modules():
        setattr(sub, "_is_hf_initialized", True)  # noqa: B010 (not a module attribute)


def _assemble(
    encoder: Wav2Vec2Model,
    decoder: MBartForCausalLM,
    tokenizer_ids: dict[str, int],
    prefix: PrefixMode,
) -> SpeechEncoderDecoderModel:
    _mark_initialized(encoder)
    _mark_initialized(decoder)
    model = SpeechEncoderDecoderModel(encoder=encoder, decoder=decoder)
    for key in ("pad_token_id", "eos_token_id", "bos_token_id", "decoder_start_token_id"):
        setattr(model.config, key, tokenizer_ids[key])
    setattr(model.config, PREFIX_KEY, prefix)
    model.generation_config = GenerationConfig(**tokenizer_ids, **{PREFIX_KEY: prefix})
    return model


def decoder_prefix_mode(model: SpeechEncoderDecoderModel) -> PrefixMode:
    """The decoder prefix the translator was trained with (``source`` for models saved before
    the option existed: what they were trained with)."""
    mode = getattr(model.config, PREFIX_KEY, "source")
    if mode not in ("source", "target", "both"):
        raise ModelLoadError(f"unknown decoder prefix {mode!r} in the model config")
    return cast(PrefixMode, mode)


def _as_id(value: object, name: str) -> int:
    if not isinstance(value, int):
        raise ModelLoadError(f"the decoder config has no integer {name} (got {value!r})")
    return value


def _special_ids(tokenizer: TargetTokenizer | None, decoder: MBartForCausalLM) -> dict[str, int]:
    config = decoder.config
    ids = {
        "pad_token_id": _as_id(config.pad_token_id, "pad_token_id"),
        "eos_token_id": _as_id(config.eos_token_id, "eos_token_id"),
        "bos_token_id": _as_id(config.bos_token_id, "bos_token_id"),
        "decoder_start_token_id": _as_id(config.eos_token_id, "eos_token_id"),
    }
    if tokenizer is not None:
        mine = {"pad_token_id": tokenizer.pad_id, "eos_token_id": tokenizer.eos_id}
        for key, value in mine.items():
            if value != ids[key]:
                raise ModelLoadError(
                    f"tokenizer {key} is {value} but the decoder's is {ids[key]}; "
                    "the tokenizer does not belong to this decoder"
                )
        ids["decoder_start_token_id"] = tokenizer.decoder_start_id
    return ids


def set_trainable(model: SpeechEncoderDecoderModel, cfg: TranslatorConfig) -> None:
    """Set ``requires_grad`` everywhere from ``cfg`` (encoder mode, decoder setting).

    The length adaptor and ``enc_to_dec_proj`` are new modules, so they always train.
    """
    encoder = cast(Wav2Vec2Model, model.encoder)
    mode = cfg.encoder.mode
    if mode == "adapters" and not has_bottleneck_adapters(encoder):
        raise ValueError("encoder mode 'adapters' but the encoder has no bottleneck adapters")
    train_front = cfg.encoder.train_feature_encoder
    apply_encoder_mode(encoder, mode, train_feature_encoder=train_front)
    if encoder.adapter is not None:
        encoder.adapter.requires_grad_(True)
    projection = getattr(model, "enc_to_dec_proj", None)
    if projection is not None:
        projection.requires_grad_(True)
    set_decoder_trainable(model.decoder, cfg.decoder.trainable)


def _prepare_encoder(encoder: Wav2Vec2Model, cfg: TranslatorConfig) -> Wav2Vec2Model:
    if cfg.encoder.mode == "adapters" and not has_bottleneck_adapters(encoder):
        add_bottleneck_adapters(
            encoder,
            cfg.encoder.adapter_ratio,
            cfg.encoder.adapter_activation,
            cfg.encoder.adapter_layer_norm,
        )
    attach_length_adaptor(encoder, cfg.length_adaptor_layers)
    return encoder


def assemble_translator(
    encoder: Wav2Vec2Model,
    decoder: MBartForCausalLM,
    cfg: TranslatorConfig,
    tokenizer: TargetTokenizer | None = None,
) -> SpeechEncoderDecoderModel:
    """Join a built encoder and decoder: adapters and length adaptor added fresh to the
    encoder as ``cfg`` says, trainable parts set. Works on the ``meta`` device."""
    encoder = _prepare_encoder(encoder, cfg)
    added = tokenizer.added_language_ids() if tokenizer is not None else {}
    if added and added_token_rows(decoder) is None:
        attach_added_rows(decoder, sorted(added.values()))
    model = _assemble(encoder, decoder, _special_ids(tokenizer, decoder), cfg.decoder.prefix)
    set_trainable(model, cfg)
    return model


def build_translator(
    cfg: TranslatorConfig,
    tokenizer: TargetTokenizer | None = None,
    *,
    vocab_size: int | None = None,
) -> SpeechEncoderDecoderModel:
    """The translator ``cfg`` describes, trainable parts set.

    The encoder comes from ``cfg.encoder`` (pretrained folder — e.g. the step-1/2 output — or a
    preset); bottleneck adapters (``adapters`` mode) and the length adaptor are added fresh.
    The decoder vocabulary is ``len(tokenizer)`` (or ``vocab_size`` when building from the
    architecture alone, without a tokenizer).
    """
    if tokenizer is not None:
        vocab_size = len(tokenizer)
    encoder = cast(Wav2Vec2Model, build_encoder(cfg.encoder))
    related = tokenizer.related_token_ids() if tokenizer is not None else None
    decoder = build_mbart(cfg.decoder, vocab_size, related)
    return assemble_translator(encoder, decoder, cfg, tokenizer)


# -- targets and generation -----------------------------------------------------------------


@torch.inference_mode()
def translate(
    model: SpeechEncoderDecoderModel,
    tokenizer: TargetTokenizer,
    input_values: torch.Tensor,
    lengths: torch.Tensor,
    langs: Sequence[str],
    num_beams: int = 5,
    max_new_tokens: int = 200,
) -> list[str]:
    """Translate a right-padded batch of waveforms (B, S) with valid ``lengths`` (B,)."""
    from samu_st.decoding.translate import generate_batch  # (decoding imports this module)

    return generate_batch(
        model,
        tokenizer,
        input_values,
        lengths,
        langs,
        num_beams=num_beams,
        max_new_tokens=max_new_tokens,
    )


# -- one folder -------------------------------------------------------------------------------


class LoadedTranslator(NamedTuple):
    model: SpeechEncoderDecoderModel
    tokenizer: TargetTokenizer
    config: TranslatorConfig


def _generation_config(
    model: SpeechEncoderDecoderModel, tokenizer: TargetTokenizer
) -> GenerationConfig:
    """The model's generation config, with the prefix mode; in ``target`` mode also en_XX
    forced after the start token, so that a plain transformers ``generate()`` (no prefix
    given) starts as the model was trained."""
    config = copy.deepcopy(model.generation_config)
    mode = decoder_prefix_mode(model)
    setattr(config, PREFIX_KEY, mode)
    if mode == "target":
        config.forced_bos_token_id = tokenizer.lang_token_id(TARGET_LANGUAGE)
    return config


def _write_prefix(path: Path, tokenizer: TargetTokenizer, mode: PrefixMode) -> None:
    langs = sorted(code for code in tokenizer.language_ids if code != TARGET_LANGUAGE)
    ids = {lang: tokenizer.prefix_ids(lang, mode) for lang in langs}
    tokens = {lang: tokenizer.hf.convert_ids_to_tokens(row) for lang, row in ids.items()}
    record = {"mode": mode, "prefix_ids": ids, "prefix_tokens": tokens}
    path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def save_translator(
    folder: str | Path,
    model: SpeechEncoderDecoderModel,
    tokenizer: TargetTokenizer,
    cfg: TranslatorConfig,
) -> Path:
    """Write the translator as one folder, atomically (a temporary folder, then a rename)."""
    target = Path(folder)
    sync_added_rows(model.decoder)  # a plain transformers load then sees the trained rows
    with atomic_folder(target, point="translator") as tmp:
        model.config.to_json_file(str(tmp / "config.json"))
        _generation_config(model, tokenizer).save_pretrained(str(tmp))
        save_model(model, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        tokenizer.save(tmp)
        _write_prefix(tmp / PREFIX_FILE, tokenizer, decoder_prefix_mode(model))
        text = json.dumps(to_dict(cfg), indent=2) + "\n"
        (tmp / CONFIG_FILE).write_text(text, encoding="utf-8")
    return target


def encoder_from_config(enc_config: Wav2Vec2Config) -> Wav2Vec2Model:
    """The encoder ``enc_config`` describes (any family; a saved translator's), with the
    bottleneck adapters it records, its weights still to be loaded (works on ``meta``)."""
    family = family_of_model_type(getattr(enc_config, "model_type", None))
    if isinstance(enc_config, Wav2Vec2Config):  # (also the -A export's SamuWav2Vec2Config)
        family = family_of_model_type("wav2vec2")
    if family is None:
        raise ModelLoadError(f"unknown encoder model_type {enc_config.model_type!r}")
    if family.name == "wav2vec2":
        enc_config.add_adapter = False
        encoder: nn.Module = Wav2Vec2Model(enc_config)
    else:
        encoder = family.model_class(enc_config)
    spec = getattr(enc_config, CONFIG_KEY, None)
    if spec:
        add_bottleneck_adapters(encoder, spec["ratio"], spec["activation"], spec["layer_norm"])
    if family.name != "wav2vec2":
        from samu_st.models.family_model import FamilySpeechModel

        encoder = FamilySpeechModel(cast(PreTrainedModel, encoder))
    return cast(Wav2Vec2Model, encoder)


def load_translator(folder: str | Path, device: str | torch.device = "cpu") -> LoadedTranslator:
    """Rebuild a translator saved by :func:`save_translator`: same weights, same outputs.

    Needs nothing but the folder (the pretrained folders named in its config are not read).
    """
    path = require_local_folder(folder, "translator")
    for name in (CONFIG_FILE, "config.json", WEIGHTS_FILE):
        if not (path / name).is_file():
            raise ModelLoadError(f"{path}: no {name}; not a folder written by save_translator")
    cfg = from_dict(TranslatorConfig, json.loads((path / CONFIG_FILE).read_text("utf-8")))
    config = SpeechEncoderDecoderConfig.from_pretrained(str(path), local_files_only=True)
    encoder = encoder_from_config(cast(Wav2Vec2Config, copy.deepcopy(config.encoder)))
    attach_length_adaptor(encoder, cfg.length_adaptor_layers)
    decoder = MBartForCausalLM(cast(MBartConfig, config.decoder))
    with safe_open(str(path / WEIGHTS_FILE), "pt") as weights:  # older folders have no rows
        if ADDED_ROWS_KEY in weights.keys():  # noqa: SIM118 (safe_open has no __contains__)
            attach_added_rows(decoder, weights.get_tensor(ADDED_ROWS_KEY).tolist())
    tokenizer = TargetTokenizer.load(path)
    model = _assemble(encoder, decoder, _special_ids(tokenizer, decoder), cfg.decoder.prefix)
    try:
        load_model(model, str(path / WEIGHTS_FILE), strict=True)
    except RuntimeError as err:
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
        detail = lines[1] if len(lines) > 1 else lines[0] if lines else "cannot load weights"
        raise ModelLoadError(f"{path / WEIGHTS_FILE}: {detail}") from None
    generation = path / "generation_config.json"
    if generation.is_file():
        model.generation_config = GenerationConfig.from_pretrained(str(path))
        setattr(model.generation_config, PREFIX_KEY, cfg.decoder.prefix)
    set_trainable(model, cfg)
    cast(nn.Module, model).to(torch.device(device))
    return LoadedTranslator(model, tokenizer, cfg)
