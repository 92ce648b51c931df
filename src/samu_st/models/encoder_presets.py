"""Size presets of every encoder family (``tiny`` for tests, ``mini`` for the CPU demo,
``paper`` for the paper-scale runs), as transformers config keyword arguments.

``paper`` keeps the released ``config.json`` fields of each checkpoint:
facebook/wav2vec2-xls-r-300m, facebook/hubert-large-ll60k, microsoft/wavlm-large,
facebook/w2v-bert-2.0 and openai/whisper-large-v2 (its encoder; the decoder sizes only fill
the config); ``tiny`` and ``mini`` shrink the sizes and keep the rest. (The field lists were
written from the released files as published; nothing could be downloaded to re-check them.)
"""

from __future__ import annotations

from typing import Any

_XLSR_CONV: dict[str, Any] = {
    "conv_kernel": (10, 3, 3, 3, 3, 2, 2),
    "conv_stride": (5, 2, 2, 2, 2, 2, 2),
    "feat_extract_norm": "layer",
    "feat_extract_activation": "gelu",
    "do_stable_layer_norm": True,
    "conv_bias": True,
    "hidden_act": "gelu",
}

WAV2VEC2_PRESETS: dict[str, dict[str, Any]] = {
    # The exact facebook/wav2vec2-xls-r-300m architecture and training defaults.
    "paper": {
        **_XLSR_CONV,
        "conv_dim": (512,) * 7,
        "hidden_size": 1024,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "intermediate_size": 4096,
        "num_conv_pos_embeddings": 128,
        "num_conv_pos_embedding_groups": 16,
        "hidden_dropout": 0.1,
        "attention_dropout": 0.1,
        "activation_dropout": 0.0,
        "feat_proj_dropout": 0.1,
        "layerdrop": 0.1,
        "mask_time_prob": 0.075,
        "mask_time_length": 10,
        "codevector_dim": 768,
        "proj_codevector_dim": 768,
    },
    # CPU-trainable (DESIGN.md §6 probe): 64-channel convs, 4 layers of 192.
    "mini": {
        **_XLSR_CONV,
        "conv_dim": (64,) * 7,
        "hidden_size": 192,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "intermediate_size": 768,
        "num_conv_pos_embeddings": 32,
        "num_conv_pos_embedding_groups": 4,
        "hidden_dropout": 0.1,
        "attention_dropout": 0.1,
        "activation_dropout": 0.0,
        "feat_proj_dropout": 0.1,
        "layerdrop": 0.0,
        "mask_time_prob": 0.05,
        "mask_time_length": 5,
        "num_codevectors_per_group": 64,
        "codevector_dim": 128,
        "proj_codevector_dim": 128,
        "num_negatives": 50,
    },
    # For tests: 2 layers of 32.
    "tiny": {
        **_XLSR_CONV,
        "conv_dim": (16,) * 7,
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "num_conv_pos_embeddings": 8,
        "num_conv_pos_embedding_groups": 2,
        "layerdrop": 0.0,
        "mask_time_prob": 0.05,
        "mask_time_length": 2,
        "num_codevectors_per_group": 8,
        "codevector_dim": 16,
        "proj_codevector_dim": 16,
        "num_negatives": 10,
    },
}

# The conv front end of wav2vec2 / HuBERT / WavLM large checkpoints (layer-normed, "stable").
_CONV: dict[str, Any] = {
    "conv_kernel": (10, 3, 3, 3, 3, 2, 2),
    "conv_stride": (5, 2, 2, 2, 2, 2, 2),
    "feat_extract_norm": "layer",
    "feat_extract_activation": "gelu",
    "do_stable_layer_norm": True,
    "hidden_act": "gelu",
}

_SMALL: dict[str, dict[str, Any]] = {
    "mini": {
        "conv_dim": (64,) * 7,
        "hidden_size": 192,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "intermediate_size": 768,
        "num_conv_pos_embeddings": 32,
        "num_conv_pos_embedding_groups": 4,
        "layerdrop": 0.0,
        "mask_time_prob": 0.05,
        "mask_time_length": 5,
    },
    "tiny": {
        "conv_dim": (16,) * 7,
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "num_conv_pos_embeddings": 8,
        "num_conv_pos_embedding_groups": 2,
        "layerdrop": 0.0,
        "mask_time_prob": 0.05,
        "mask_time_length": 2,
    },
}

_LARGE: dict[str, Any] = {
    "conv_dim": (512,) * 7,
    "hidden_size": 1024,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "intermediate_size": 4096,
    "num_conv_pos_embeddings": 128,
    "num_conv_pos_embedding_groups": 16,
    "layerdrop": 0.1,
}

HUBERT_PRESETS: dict[str, dict[str, Any]] = {
    # facebook/hubert-large-ll60k
    "paper": {
        **_CONV,
        **_LARGE,
        "conv_bias": True,
        "feat_proj_layer_norm": True,
        "hidden_dropout": 0.1,
        "attention_dropout": 0.1,
        "activation_dropout": 0.0,
        "feat_proj_dropout": 0.1,
        "mask_time_prob": 0.05,
        "mask_time_length": 10,
    },
    **{k: {**_CONV, **v, "conv_bias": True} for k, v in _SMALL.items()},
}

WAVLM_PRESETS: dict[str, dict[str, Any]] = {
    # microsoft/wavlm-large
    "paper": {
        **_CONV,
        **_LARGE,
        "conv_bias": False,
        "num_buckets": 320,
        "max_bucket_distance": 800,
        "hidden_dropout": 0.1,
        "attention_dropout": 0.1,
        "activation_dropout": 0.0,
        "feat_proj_dropout": 0.1,
        "mask_time_prob": 0.075,
        "mask_time_length": 10,
    },
    **{
        k: {**_CONV, **v, "conv_bias": False, "num_buckets": 32, "max_bucket_distance": 64}
        for k, v in _SMALL.items()
    },
}

_W2V_BERT_COMMON: dict[str, Any] = {
    "feature_projection_input_dim": 160,  # 80 mel bins x 2 stacked frames (the extractor's)
    "hidden_act": "swish",
    "position_embeddings_type": "relative_key",
    "add_adapter": False,  # its own adaptor is replaced by ours (length_adaptor_layers)
    "use_intermediate_ffn_before_adapter": False,
    "apply_spec_augment": True,
    "layer_norm_eps": 1e-5,
}

W2V_BERT_PRESETS: dict[str, dict[str, Any]] = {
    # facebook/w2v-bert-2.0 (the SeamlessM4T v2 speech encoder, 600M)
    "paper": {
        **_W2V_BERT_COMMON,
        "hidden_size": 1024,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "intermediate_size": 4096,
        "conv_depthwise_kernel_size": 31,
        "left_max_position_embeddings": 64,
        "right_max_position_embeddings": 8,
        "max_source_positions": 5000,
        "hidden_dropout": 0.0,
        "attention_dropout": 0.0,
        "activation_dropout": 0.0,
        "feat_proj_dropout": 0.0,
        "conformer_conv_dropout": 0.1,
        "layerdrop": 0.1,
        "mask_time_prob": 0.05,
        "mask_time_length": 10,
    },
    "mini": {
        **_W2V_BERT_COMMON,
        "hidden_size": 192,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "intermediate_size": 768,
        "conv_depthwise_kernel_size": 15,
        "left_max_position_embeddings": 32,
        "right_max_position_embeddings": 8,
        "layerdrop": 0.0,
        "mask_time_prob": 0.05,
        "mask_time_length": 5,
    },
    "tiny": {
        **_W2V_BERT_COMMON,
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "conv_depthwise_kernel_size": 5,
        "left_max_position_embeddings": 8,
        "right_max_position_embeddings": 4,
        "layerdrop": 0.0,
        "mask_time_prob": 0.05,
        "mask_time_length": 2,
    },
}

_WHISPER_COMMON: dict[str, Any] = {
    "num_mel_bins": 80,
    "max_source_positions": 1500,  # 30 s of 20 ms frames: the window Whisper was trained on
    "max_target_positions": 448,
    "vocab_size": 51865,
    "activation_function": "gelu",
    "scale_embedding": False,
}

WHISPER_PRESETS: dict[str, dict[str, Any]] = {
    # openai/whisper-large-v2 (the encoder is used; the decoder sizes only fill the config)
    "paper": {
        **_WHISPER_COMMON,
        "d_model": 1280,
        "encoder_layers": 32,
        "encoder_attention_heads": 20,
        "encoder_ffn_dim": 5120,
        "decoder_layers": 32,
        "decoder_attention_heads": 20,
        "decoder_ffn_dim": 5120,
    },
    "mini": {
        **_WHISPER_COMMON,
        "d_model": 192,
        "encoder_layers": 4,
        "encoder_attention_heads": 4,
        "encoder_ffn_dim": 768,
        "decoder_layers": 1,
        "decoder_attention_heads": 4,
        "decoder_ffn_dim": 768,
    },
    "tiny": {
        **_WHISPER_COMMON,
        "d_model": 32,
        "encoder_layers": 2,
        "encoder_attention_heads": 2,
        "encoder_ffn_dim": 64,
        "decoder_layers": 1,
        "decoder_attention_heads": 2,
        "decoder_ffn_dim": 64,
    },
}

# EncoderConfig override -> config attribute (None: the family has no such setting).
WAV2VEC2_OVERRIDES: dict[str, str | None] = {
    name: name
    for name in (
        "layerdrop",
        "mask_time_prob",
        "mask_time_length",
        "mask_feature_prob",
        "hidden_dropout",
        "attention_dropout",
        "activation_dropout",
        "feat_proj_dropout",
    )
}
WHISPER_OVERRIDES: dict[str, str | None] = {
    "layerdrop": "encoder_layerdrop",
    "mask_time_prob": None,  # WhisperEncoder has no SpecAugment (WhisperModel masks inputs)
    "mask_time_length": None,
    "mask_feature_prob": None,
    "hidden_dropout": "dropout",
    "attention_dropout": "attention_dropout",
    "activation_dropout": "activation_dropout",
    "feat_proj_dropout": None,
}
