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
- Conditioning on the source language: the decoder prefix is
  ``[</s> (decoder start), <source-language token>]`` (:func:`make_decoder_targets`,
  :func:`generation_prefix`).

Saved as ONE folder (:func:`save_translator` / :func:`load_translator`): ``config.json`` (the
transformers config), ``samu_translator.json`` (our :class:`TranslatorConfig`),
``model.safetensors`` (every weight, adapters included), ``generation_config.json`` and the
tokenizer files.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, cast

import torch
from safetensors.torch import load_model, save_model
from torch import nn
from transformers import (
    GenerationConfig,
    MBartConfig,
    MBartForCausalLM,
    SpeechEncoderDecoderConfig,
    SpeechEncoderDecoderModel,
    Wav2Vec2Config,
    Wav2Vec2Model,
)
from transformers.models.wav2vec2.modeling_wav2vec2 import Wav2Vec2Adapter

from samu_st.config import from_dict, to_dict
from samu_st.errors import ModelLoadError
from samu_st.models.adapters import (
    CONFIG_KEY,
    add_bottleneck_adapters,
    bottleneck_adapters,
    has_bottleneck_adapters,
)
from samu_st.models.decoder import DecoderConfig, build_mbart, set_decoder_trainable
from samu_st.models.encoder import EncoderConfig, build_wav2vec2, lengths_to_mask
from samu_st.models.loading import require_local_folder
from samu_st.models.tokenizer import (
    DecoderTargets,
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


def encoder_output_lengths(model: SpeechEncoderDecoderModel, lengths: torch.Tensor) -> torch.Tensor:
    """(B,) input lengths in samples → (B,) frames the decoder attends to (after the adaptor)."""
    encoder = cast(Wav2Vec2Model, model.encoder)
    out = encoder._get_feat_extract_output_lengths(cast(torch.LongTensor, lengths))
    return out.to(torch.long)


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


def attach_length_adaptor(encoder: Wav2Vec2Model, num_layers: int) -> None:
    """Give ``encoder`` a fresh :class:`LengthAdaptor` of ``num_layers`` (0: none), in place.

    Sets ``add_adapter`` and ``num_adapter_layers`` in its config, so that transformers' own
    output-length and mask functions account for the adaptor.
    """
    config = encoder.config
    if num_layers < 0:
        raise ValueError(f"length_adaptor_layers must be >= 0, got {num_layers}")
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


def _mark_initialized(module: nn.Module) -> None:
    # SpeechEncoderDecoderModel.post_init re-initialises every module not flagged by
    # transformers, which would overwrite loaded weights and the zero-initialised adapters.
    for sub in module.modules():
        setattr(sub, "_is_hf_initialized", True)  # noqa: B010 (not a module attribute)


def _assemble(
    encoder: Wav2Vec2Model, decoder: MBartForCausalLM, tokenizer_ids: dict[str, int]
) -> SpeechEncoderDecoderModel:
    _mark_initialized(encoder)
    _mark_initialized(decoder)
    model = SpeechEncoderDecoderModel(encoder=encoder, decoder=decoder)
    for key in ("pad_token_id", "eos_token_id", "bos_token_id", "decoder_start_token_id"):
        setattr(model.config, key, tokenizer_ids[key])
    model.generation_config = GenerationConfig(**tokenizer_ids)
    return model


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
    encoder.requires_grad_(mode == "full")
    conv_trains = mode == "full" and cfg.encoder.train_feature_encoder
    encoder.feature_extractor.requires_grad_(conv_trains)
    encoder.feature_extractor._requires_grad = conv_trains
    if mode == "adapters":
        for adapter in bottleneck_adapters(encoder):
            adapter.requires_grad_(True)
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
    model = _assemble(encoder, decoder, _special_ids(tokenizer, decoder))
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
    encoder = build_wav2vec2(cfg.encoder)
    decoder = build_mbart(cfg.decoder, vocab_size)
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
    device = next(model.parameters()).device
    mask = lengths_to_mask(lengths, input_values.shape[1]).to(device=device, dtype=torch.long)
    out = cast(Any, model).generate(
        inputs=input_values.to(device),
        attention_mask=mask,
        num_beams=num_beams,
        max_new_tokens=max_new_tokens,
        **generate_kwargs(tokenizer, langs, device),
    )
    return tokenizer.batch_decode(out.tolist())


# -- one folder -------------------------------------------------------------------------------


class LoadedTranslator(NamedTuple):
    model: SpeechEncoderDecoderModel
    tokenizer: TargetTokenizer
    config: TranslatorConfig


def save_translator(
    folder: str | Path,
    model: SpeechEncoderDecoderModel,
    tokenizer: TargetTokenizer,
    cfg: TranslatorConfig,
) -> Path:
    """Write the translator as one folder, atomically (a temporary folder, then a rename)."""
    target = Path(folder)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.config.to_json_file(str(tmp / "config.json"))
    model.generation_config.save_pretrained(str(tmp))
    save_model(model, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
    tokenizer.save(tmp)
    (tmp / CONFIG_FILE).write_text(json.dumps(to_dict(cfg), indent=2) + "\n", encoding="utf-8")
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)
    return target


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
    enc_config = cast(Wav2Vec2Config, copy.deepcopy(config.encoder))
    enc_config.add_adapter = False
    encoder = Wav2Vec2Model(enc_config)
    spec = getattr(enc_config, CONFIG_KEY, None)
    if spec:
        add_bottleneck_adapters(encoder, spec["ratio"], spec["activation"], spec["layer_norm"])
    attach_length_adaptor(encoder, cfg.length_adaptor_layers)
    decoder = MBartForCausalLM(cast(MBartConfig, config.decoder))
    tokenizer = TargetTokenizer.load(path)
    model = _assemble(encoder, decoder, _special_ids(tokenizer, decoder))
    try:
        load_model(model, str(path / WEIGHTS_FILE), strict=True)
    except RuntimeError as err:
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
        detail = lines[1] if len(lines) > 1 else lines[0] if lines else "cannot load weights"
        raise ModelLoadError(f"{path / WEIGHTS_FILE}: {detail}") from None
    generation = path / "generation_config.json"
    if generation.is_file():
        model.generation_config = GenerationConfig.from_pretrained(str(path))
    set_trainable(model, cfg)
    cast(nn.Module, model).to(torch.device(device))
    return LoadedTranslator(model, tokenizer, cfg)
