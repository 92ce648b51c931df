"""CTC speech recognition model: transformers' ``Wav2Vec2ForCTC`` built the samu-st way.

The model is the stock ``Wav2Vec2ForCTC`` (encoder + linear head over a character vocabulary),
so a saved folder loads with ``Wav2Vec2ForCTC.from_pretrained`` and
``Wav2Vec2Processor.from_pretrained`` directly, as the notebook recipe and the HF tooling expect.

- :func:`build_ctc_model` — from an :class:`EncoderConfig` (a preset, or a local encoder folder
  such as a SAMU model's ``encoder/``, which gets a fresh head);
- :func:`save_ctc_model` / :func:`load_ctc_model` — one folder with model and processor;
- :func:`ctc_encoder` — the encoder of a CTC model as a ``Wav2Vec2Model`` (the ctc-xlsr
  baseline of the paper). A CTC folder also works directly as
  ``EncoderConfig(pretrained=<ctc folder>)``: the head is dropped on load.

Other encoder families (``encoder.family`` hubert, wavlm, w2v-bert, whisper) get
:class:`~samu_st.models.family_ctc.FamilyForCTC` instead (same interface, samu-st's own folder);
their ``encoder/`` export is the step-3 encoder of the CTC baseline.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, cast

from torch import nn
from transformers import (
    Wav2Vec2CTCTokenizer,
    Wav2Vec2FeatureExtractor,
    Wav2Vec2ForCTC,
    Wav2Vec2Model,
    Wav2Vec2Processor,
)

from samu_st.models.adapters import (
    CONFIG_KEY,
    add_bottleneck_adapters,
    has_bottleneck_adapters,
)
from samu_st.models.encoder import (
    EncoderConfig,
    apply_encoder_mode,
    load_wav2vec2,
    load_wav2vec2_model,
    wav2vec2_config,
)
from samu_st.models.loading import hf_load_errors

SAMPLE_RATE = 16000


def _ctc_settings(vocab_size: int, pad_token_id: int, final_dropout: float) -> dict[str, Any]:
    return {
        "vocab_size": vocab_size,
        "pad_token_id": pad_token_id,
        # the blank is the pad token, as with Wav2Vec2CTCTokenizer
        "ctc_loss_reduction": "mean",
        # labels longer than the frames allow give 0 loss instead of inf (the notebook's defect)
        "ctc_zero_infinity": True,
        "final_dropout": final_dropout,
    }


def build_ctc_model(
    cfg: EncoderConfig, vocab_size: int, pad_token_id: int, final_dropout: float = 0.0
) -> Wav2Vec2ForCTC:
    """A ``Wav2Vec2ForCTC`` whose encoder comes from ``cfg`` and whose head is fresh.

    Args:
        cfg: encoder source (``pretrained`` folder or ``size`` preset), mode (``full`` freezes
            the conv feature encoder, as the recipe does), dropout/masking/layerdrop and
            gradient checkpointing.
        vocab_size: output classes (``len(tokenizer)``).
        pad_token_id: the tokenizer's pad id, used as the CTC blank.
        final_dropout: dropout before the head.
    """
    if not 0 <= pad_token_id < vocab_size:
        raise ValueError(f"pad_token_id {pad_token_id} is not a valid id for {vocab_size} classes")
    if cfg.family != "wav2vec2":
        return cast(Wav2Vec2ForCTC, _build_family_ctc(cfg, vocab_size, pad_token_id, final_dropout))
    settings = _ctc_settings(vocab_size, pad_token_id, final_dropout)
    if cfg.pretrained is None:
        model = Wav2Vec2ForCTC(wav2vec2_config(cfg, **settings))
    else:
        encoder = load_wav2vec2(cfg.pretrained, cfg)
        config = copy.deepcopy(encoder.config)
        for key, value in settings.items():
            setattr(config, key, value)
        model = Wav2Vec2ForCTC(config)
        if has_bottleneck_adapters(encoder):
            spec = getattr(config, CONFIG_KEY)
            add_bottleneck_adapters(model, spec["ratio"], spec["activation"], spec["layer_norm"])
        model.wav2vec2.load_state_dict(encoder.state_dict())
    if cfg.mode == "adapters" and not has_bottleneck_adapters(model):
        add_bottleneck_adapters(
            model, cfg.adapter_ratio, cfg.adapter_activation, cfg.adapter_layer_norm
        )
    apply_encoder_mode(model, cfg.mode, train_feature_encoder=cfg.train_feature_encoder)
    if cfg.gradient_checkpointing:
        model.activation_checkpointing_enable()
    return model


def _build_family_ctc(
    cfg: EncoderConfig, vocab_size: int, pad_token_id: int, final_dropout: float
) -> nn.Module:
    """:func:`build_ctc_model` for HuBERT, WavLM, w2v-BERT and Whisper encoders
    (:class:`~samu_st.models.family_ctc.FamilyForCTC`)."""
    from samu_st.models.family_build import build_family_model
    from samu_st.models.family_ctc import FamilyForCTC

    encoder = build_family_model(cfg)
    if cfg.mode == "adapters" and not has_bottleneck_adapters(encoder):
        add_bottleneck_adapters(
            encoder, cfg.adapter_ratio, cfg.adapter_activation, cfg.adapter_layer_norm
        )
    model = FamilyForCTC(encoder, vocab_size, pad_token_id, final_dropout)
    apply_encoder_mode(encoder, cfg.mode, train_feature_encoder=cfg.train_feature_encoder)
    return model


def default_feature_extractor() -> Wav2Vec2FeatureExtractor:
    """The XLS-R feature extractor: 16 kHz mono, per-utterance normalisation, attention mask."""
    return Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=SAMPLE_RATE,
        padding_value=0.0,
        do_normalize=True,
        return_attention_mask=True,
    )


def save_ctc_model(
    model: Wav2Vec2ForCTC,
    folder: str | Path,
    tokenizer: Wav2Vec2CTCTokenizer,
    feature_extractor: Wav2Vec2FeatureExtractor | None = None,
) -> Wav2Vec2Processor:
    """Save model and processor in one folder that transformers loads as is.

    Checks that the tokenizer fits the head (its pad id is the model's blank and its vocabulary
    ids are below ``vocab_size``), a mismatch that otherwise only shows as a useless model later.
    Returns the processor that was saved.
    """
    if tokenizer.pad_token_id != model.config.pad_token_id:
        raise ValueError(
            f"tokenizer pad id {tokenizer.pad_token_id} differs from the model's "
            f"pad_token_id {model.config.pad_token_id} (the CTC blank)"
        )
    # The characters of vocab.json must fit the head; added special tokens (<s>, </s>) never
    # occur in CTC labels, so len(tokenizer) may exceed it.
    vocab_size = int(model.config.vocab_size or 0)
    if tokenizer.vocab_size > vocab_size:
        raise ValueError(
            f"the tokenizer's vocabulary has {tokenizer.vocab_size} tokens but the CTC head "
            f"only {vocab_size} outputs"
        )
    processor = Wav2Vec2Processor(
        feature_extractor=feature_extractor or default_feature_extractor(), tokenizer=tokenizer
    )
    folder = Path(folder)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return processor


def load_ctc_model(
    folder: str | Path, cfg: EncoderConfig | None = None
) -> tuple[Wav2Vec2ForCTC, Wav2Vec2Processor]:
    """Load a CTC model folder (model + processor), offline, with shape checks.

    ``cfg`` optionally overrides dropout/masking and sets the training mode; without it the
    model is returned as saved (all parameters trainable, in transformers' way).
    """
    from samu_st.models.family_ctc import is_family_ctc_folder, load_family_ctc

    if is_family_ctc_folder(folder):
        model = cast(Wav2Vec2ForCTC, load_family_ctc(folder, cfg))
    else:
        model = load_wav2vec2_model(Wav2Vec2ForCTC, str(folder), cfg)
    with hf_load_errors(folder, "CTC processor"):
        processor = Wav2Vec2Processor.from_pretrained(str(folder), local_files_only=True)
    if cfg is not None:
        apply_encoder_mode(
            ctc_encoder(model), cfg.mode, train_feature_encoder=cfg.train_feature_encoder
        )
        if cfg.gradient_checkpointing:
            model.activation_checkpointing_enable()
    return model, processor


def ctc_encoder(model: Wav2Vec2ForCTC) -> Wav2Vec2Model:
    """The ``Wav2Vec2Model`` (or wrapped family model) inside a CTC model (shared, not copied):
    the ctc-xlsr baseline's encoder. Save it with :func:`samu_st.models.encoder.save_encoder`
    to use it as ``EncoderConfig(pretrained=...)``."""
    wrapped = getattr(model, "encoder", None)
    return cast(Wav2Vec2Model, wrapped) if wrapped is not None else model.wav2vec2
