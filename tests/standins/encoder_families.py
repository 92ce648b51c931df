"""Tiny stand-ins of the encoder checkpoints researchers use besides XLS-R, written by
transformers' own classes with the fields of the released ``config.json`` (sizes shrunk):

- ``facebook/hubert-large-ll60k`` — a ``HubertModel`` folder;
- ``microsoft/wavlm-large`` — a ``WavLMModel`` folder;
- ``facebook/w2v-bert-2.0`` — a ``Wav2Vec2BertModel`` folder with its
  ``SeamlessM4TFeatureExtractor`` ``preprocessor_config.json``;
- ``openai/whisper-large-v2`` — a ``WhisperForConditionalGeneration`` folder (what users have;
  samu-st reads its encoder) with its ``WhisperFeatureExtractor``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from transformers import (
    HubertConfig,
    HubertModel,
    SeamlessM4TFeatureExtractor,
    Wav2Vec2BertConfig,
    Wav2Vec2BertModel,
    Wav2Vec2FeatureExtractor,
    WavLMConfig,
    WavLMModel,
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperForConditionalGeneration,
)

from standins.xlsr import TINY_SIZES as XLSR_TINY_SIZES

_CONV: dict[str, Any] = {
    "conv_kernel": [10, 3, 3, 3, 3, 2, 2],
    "conv_stride": [5, 2, 2, 2, 2, 2, 2],
    "feat_extract_activation": "gelu",
    "feat_extract_norm": "layer",
    "do_stable_layer_norm": True,
    "num_feat_extract_layers": 7,
}

HUBERT_LARGE_FIELDS: dict[str, Any] = {
    **_CONV,
    "activation_dropout": 0.0,
    "apply_spec_augment": True,
    "architectures": ["HubertModel"],
    "attention_dropout": 0.1,
    "bos_token_id": 1,
    "conv_bias": True,
    "ctc_loss_reduction": "sum",
    "ctc_zero_infinity": False,
    "eos_token_id": 2,
    "feat_proj_dropout": 0.1,
    "final_dropout": 0.1,
    "hidden_act": "gelu",
    "hidden_dropout": 0.1,
    "initializer_range": 0.02,
    "layer_norm_eps": 1e-05,
    "layerdrop": 0.1,
    "mask_feature_length": 10,
    "mask_feature_prob": 0.0,
    "mask_time_length": 10,
    "mask_time_prob": 0.05,
    "model_type": "hubert",
    "pad_token_id": 0,
    "vocab_size": 32,
}

WAVLM_LARGE_FIELDS: dict[str, Any] = {
    **_CONV,
    "activation_dropout": 0.0,
    "adapter_kernel_size": 3,
    "adapter_stride": 2,
    "add_adapter": False,
    "apply_spec_augment": True,
    "architectures": ["WavLMModel"],
    "attention_dropout": 0.1,
    "bos_token_id": 1,
    "conv_bias": False,
    "eos_token_id": 2,
    "feat_proj_dropout": 0.1,
    "final_dropout": 0.0,
    "hidden_act": "gelu",
    "hidden_dropout": 0.1,
    "initializer_range": 0.02,
    "layer_norm_eps": 1e-05,
    "layerdrop": 0.1,
    "mask_feature_length": 10,
    "mask_feature_prob": 0.0,
    "mask_time_length": 10,
    "mask_time_prob": 0.075,
    "model_type": "wavlm",
    "num_adapter_layers": 3,
    "pad_token_id": 0,
    "vocab_size": 32,
}

W2V_BERT_2_FIELDS: dict[str, Any] = {
    "activation_dropout": 0.0,
    "adapter_act": "relu",
    "adapter_kernel_size": 3,
    "adapter_stride": 2,
    "add_adapter": False,
    "apply_spec_augment": True,
    "architectures": ["Wav2Vec2BertModel"],
    "attention_dropout": 0.0,
    "bos_token_id": 1,
    "conformer_conv_dropout": 0.1,
    "eos_token_id": 2,
    "feat_proj_dropout": 0.0,
    "feature_projection_input_dim": 160,
    "final_dropout": 0.1,
    "hidden_act": "swish",
    "hidden_dropout": 0.0,
    "initializer_range": 0.02,
    "layer_norm_eps": 1e-05,
    "layerdrop": 0.1,
    "mask_time_length": 10,
    "mask_time_prob": 0.05,
    "max_source_positions": 5000,
    "model_type": "wav2vec2-bert",
    "num_adapter_layers": 1,
    "pad_token_id": 0,
    "position_embeddings_type": "relative_key",
    "rotary_embedding_base": 10000,
    "use_intermediate_ffn_before_adapter": False,
}

WHISPER_LARGE_V2_FIELDS: dict[str, Any] = {
    "activation_dropout": 0.0,
    "activation_function": "gelu",
    "architectures": ["WhisperForConditionalGeneration"],
    "attention_dropout": 0.0,
    "bos_token_id": 50257,
    "decoder_layerdrop": 0.0,
    "decoder_start_token_id": 50258,
    "dropout": 0.0,
    "encoder_layerdrop": 0.0,
    "eos_token_id": 50257,
    "init_std": 0.02,
    "is_encoder_decoder": True,
    "max_source_positions": 1500,
    "max_target_positions": 448,
    "model_type": "whisper",
    "num_mel_bins": 80,
    "pad_token_id": 50257,
    "scale_embedding": False,
    "vocab_size": 51865,
}

# the XLS-R stand-in's transformer and conv sizes (HuBERT/WavLM share wav2vec2's layout)
_TINY_WAVEFORM: dict[str, Any] = {k: v for k, v in XLSR_TINY_SIZES.items() if "codevector" not in k}
_TINY_W2V_BERT: dict[str, Any] = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 64,
    "output_hidden_size": 32,
    "conv_depthwise_kernel_size": 31,
    "left_max_position_embeddings": 64,
    "right_max_position_embeddings": 8,
}
_TINY_WHISPER: dict[str, Any] = {
    "d_model": 32,
    "encoder_layers": 2,
    "encoder_attention_heads": 4,
    "encoder_ffn_dim": 64,
    "decoder_layers": 1,
    "decoder_attention_heads": 4,
    "decoder_ffn_dim": 64,
}


def _check_fields(folder: Path, fields: dict[str, Any]) -> None:
    saved = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    missing = [k for k in fields if k not in saved]
    assert not missing, f"transformers dropped config fields {missing}"


def _waveform_extractor() -> Wav2Vec2FeatureExtractor:
    return Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
        return_attention_mask=True,
    )  # fmt: skip


def write_hubert(folder: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    fields = {**HUBERT_LARGE_FIELDS, **_TINY_WAVEFORM}
    HubertModel(HubertConfig(**fields)).save_pretrained(folder)
    _waveform_extractor().save_pretrained(folder)
    _check_fields(folder, HUBERT_LARGE_FIELDS)
    return folder


def write_wavlm(folder: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    sizes = {**_TINY_WAVEFORM, "output_hidden_size": 32, "num_buckets": 32}
    WavLMModel(WavLMConfig(**WAVLM_LARGE_FIELDS, **sizes)).save_pretrained(folder)
    _waveform_extractor().save_pretrained(folder)
    _check_fields(folder, WAVLM_LARGE_FIELDS)
    return folder


def write_w2v_bert(folder: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    config = Wav2Vec2BertConfig(**W2V_BERT_2_FIELDS, **_TINY_W2V_BERT)
    Wav2Vec2BertModel(config).save_pretrained(folder)
    SeamlessM4TFeatureExtractor(sampling_rate=16000).save_pretrained(folder)
    _check_fields(folder, W2V_BERT_2_FIELDS)
    return folder


def write_whisper(folder: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    config = WhisperConfig(**WHISPER_LARGE_V2_FIELDS, **_TINY_WHISPER)
    WhisperForConditionalGeneration(config).save_pretrained(folder)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(folder)
    _check_fields(folder, WHISPER_LARGE_V2_FIELDS)
    return folder


WRITERS = {
    "hubert": write_hubert,
    "wavlm": write_wavlm,
    "w2v-bert": write_w2v_bert,
    "whisper": write_whisper,
}


def write_standin(family: str, folder: Path, seed: int = 0) -> Path:
    """Write the tiny stand-in checkpoint of ``family`` to ``folder``; returns ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    return WRITERS[family](folder, seed)
