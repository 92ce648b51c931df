"""A tiny ``facebook/wav2vec2-xls-r-300m`` written by transformers' own classes.

Every field of the released ``config.json`` is kept (``do_stable_layer_norm``,
``feat_extract_norm: layer``, ``layerdrop: 0.1``, ``mask_time_prob: 0.075``, the seven-layer
conv stack with its real kernels and strides, ``architectures: Wav2Vec2ForPreTraining``, ...);
only the sizes shrink. Two weight layouts: today's ``model.safetensors``, and the release's
``pytorch_model.bin`` whose weight-normed positional convolution is stored as ``weight_g`` /
``weight_v`` (transformers now names them ``parametrizations.weight.original0/1``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2ForPreTraining

# The released config.json, sizes aside (transformers 4.12-era field list).
XLSR_300M_FIELDS: dict[str, Any] = {
    "activation_dropout": 0.0,
    "apply_spec_augment": True,
    "architectures": ["Wav2Vec2ForPreTraining"],
    "attention_dropout": 0.1,
    "bos_token_id": 1,
    "contrastive_logits_temperature": 0.1,
    "conv_bias": True,
    "conv_kernel": [10, 3, 3, 3, 3, 2, 2],
    "conv_stride": [5, 2, 2, 2, 2, 2, 2],
    "ctc_loss_reduction": "sum",
    "ctc_zero_infinity": False,
    "diversity_loss_weight": 0.1,
    "do_stable_layer_norm": True,
    "eos_token_id": 2,
    "feat_extract_activation": "gelu",
    "feat_extract_dropout": 0.0,
    "feat_extract_norm": "layer",
    "feat_proj_dropout": 0.1,
    "feat_quantizer_dropout": 0.0,
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
    "model_type": "wav2vec2",
    "num_codevector_groups": 2,
    "num_feat_extract_layers": 7,
    "num_negatives": 100,
    "pad_token_id": 0,
    "vocab_size": 32,
}
# Sizes: XLS-R 300M has conv 512, hidden 1024, 24 layers, 16 heads, FFN 4096, 128-tap
# positional conv in 16 groups, 320 codevectors per group of dim 768.
TINY_SIZES: dict[str, Any] = {
    "conv_dim": [16] * 7,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 64,
    "num_conv_pos_embeddings": 16,
    "num_conv_pos_embedding_groups": 16,
    "num_codevectors_per_group": 8,
    "codevector_dim": 16,
    "proj_codevector_dim": 16,
}


def _legacy_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state dict with weight norm stored as ``weight_g``/``weight_v`` (the release)."""
    out = {}
    for key, value in model.state_dict().items():
        key = key.replace("parametrizations.weight.original0", "weight_g")
        key = key.replace("parametrizations.weight.original1", "weight_v")
        out[key] = value.contiguous().clone()
    return out


def write_xlsr(folder: Path, legacy: bool = False, seed: int = 0) -> Path:
    """Write the tiny XLS-R to ``folder`` (``legacy``: ``pytorch_model.bin`` with
    ``weight_g``/``weight_v`` keys, else ``model.safetensors``); returns ``folder``."""
    torch.manual_seed(seed)
    config = Wav2Vec2Config(**XLSR_300M_FIELDS, **TINY_SIZES)
    model = Wav2Vec2ForPreTraining(config).eval()
    folder.mkdir(parents=True, exist_ok=True)
    if legacy:
        config.save_pretrained(folder)
        torch.save(_legacy_state_dict(model), folder / "pytorch_model.bin")
    else:
        model.save_pretrained(folder)
    Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
        return_attention_mask=True,
    ).save_pretrained(folder)  # fmt: skip
    saved = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    missing = [k for k in XLSR_300M_FIELDS if k not in saved]
    assert not missing, f"transformers dropped config fields {missing}"
    return folder
