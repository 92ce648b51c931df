"""Speech encoder: presets, offline loading, padding invariance, freezing modes, counts."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from transformers import Wav2Vec2Config, Wav2Vec2ForCTC, Wav2Vec2Model

from samu_st.config import from_dict
from samu_st.errors import ModelLoadError
from samu_st.models.encoder import (
    EncoderConfig,
    SpeechEncoder,
    build_wav2vec2,
    encoder_parameter_summary,
    load_wav2vec2,
    trainable_parameter_count,
    wav2vec2_config,
)

TINY = EncoderConfig(size="tiny")


def _batch(lengths: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random waveforms right-padded with LARGE noise, so any leak of padding shows."""
    gen = torch.Generator().manual_seed(seed)
    wav = 100.0 * torch.randn(len(lengths), max(lengths), generator=gen)
    for i, n in enumerate(lengths):
        wav[i, :n] = torch.randn(n, generator=gen)
    return wav, torch.tensor(lengths)


def test_tiny_forward_shapes_lengths_and_mask() -> None:
    torch.manual_seed(0)
    encoder = SpeechEncoder.from_config(TINY).eval()
    wav, lengths = _batch([16000, 8000, 4000])
    out = encoder(wav, lengths)
    # conv stack (10,3,3,3,3,2,2)/(5,2,2,2,2,2,2): 16000 -> 49, 8000 -> 24, 4000 -> 12 frames
    assert out.lengths.tolist() == [49, 24, 12]
    assert out.hidden.shape == (3, 49, 32)
    assert out.mask.sum(1).tolist() == [49, 24, 12]
    assert torch.all(out.hidden[1, 24:] == 0)
    assert encoder.min_input_samples == 400


def test_padding_invariance_of_valid_frames() -> None:
    torch.manual_seed(0)
    encoder = SpeechEncoder.from_config(TINY).eval()
    wav, lengths = _batch([5000, 16000, 12000])
    with torch.no_grad():
        batched = encoder(wav, lengths)
        alone = encoder(wav[:1, :5000], lengths[:1])
    n = int(alone.lengths[0])
    assert n == int(batched.lengths[0]) == 15
    torch.testing.assert_close(batched.hidden[0, :n], alone.hidden[0], atol=1e-5, rtol=0)


def test_group_norm_front_end_warns_and_is_not_padding_invariant() -> None:
    torch.manual_seed(0)
    config = wav2vec2_config(TINY, feat_extract_norm="group", do_stable_layer_norm=False)
    with pytest.warns(UserWarning, match="GroupNorm"):
        encoder = SpeechEncoder(Wav2Vec2Model(config)).eval()
    wav, lengths = _batch([5000, 16000])
    with torch.no_grad():
        batched = encoder(wav, lengths).hidden[0, :15]
        alone = encoder(wav[:1, :5000], lengths[:1]).hidden[0]
    assert (batched - alone).abs().max() > 1e-2


def test_too_short_input_is_rejected() -> None:
    encoder = SpeechEncoder.from_config(TINY).eval()
    wav, lengths = _batch([1000, 300])
    with pytest.raises(ValueError, match="receptive field"):
        encoder(wav, lengths)


def test_modes_set_trainable_parameters() -> None:
    model = build_wav2vec2(TINY)
    total = sum(p.numel() for p in model.parameters())
    conv = sum(p.numel() for p in model.feature_extractor.parameters())
    encoder = SpeechEncoder(model, "full")
    assert trainable_parameter_count(encoder) == total - conv > 0
    encoder.set_mode("frozen")
    assert trainable_parameter_count(encoder) == 0
    with pytest.raises(ValueError, match="adapters"):
        encoder.set_mode("adapters")
    adapted = SpeechEncoder.from_config(EncoderConfig(size="tiny", mode="adapters"))
    # 2 layers x 2 adapters x (32*8 + 8 + 8*32 + 32)
    assert trainable_parameter_count(adapted) == 2 * 2 * (2 * 32 * 8 + 8 + 32)
    trained_conv = SpeechEncoder(build_wav2vec2(TINY), "full", train_feature_encoder=True)
    assert trainable_parameter_count(trained_conv) == total


def test_gradient_checkpointing_gives_same_gradients() -> None:
    wav, lengths = _batch([3000, 2000])
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        cfg = EncoderConfig(size="tiny", gradient_checkpointing=checkpointing, hidden_dropout=0.0)
        encoder = SpeechEncoder.from_config(cfg)
        assert encoder.model.encoder.layers[0].gradient_checkpointing is checkpointing
        encoder.train()
        encoder.model.config.mask_time_prob = 0.0
        encoder(wav, lengths).hidden.pow(2).sum().backward()
        grads.append(encoder.model.encoder.layers[0].attention.q_proj.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])


def test_load_round_trip_and_errors(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_wav2vec2(TINY).eval()
    model.save_pretrained(tmp_path / "enc")
    loaded = load_wav2vec2(str(tmp_path / "enc")).eval()
    assert loaded.config._attn_implementation == "sdpa"
    wav, lengths = _batch([4000])
    torch.testing.assert_close(
        SpeechEncoder(loaded)(wav, lengths).hidden, SpeechEncoder(model)(wav, lengths).hidden
    )
    with pytest.raises(ModelLoadError, match="offline"):
        load_wav2vec2("facebook/wav2vec2-xls-r-300m")
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_wav2vec2(str(tmp_path / "nothing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match=r"no config\.json"):
        load_wav2vec2(str(tmp_path / "empty"))
    (tmp_path / "empty" / "config.json").write_text((tmp_path / "enc" / "config.json").read_text())
    with pytest.raises(ModelLoadError, match="no weights file"):
        load_wav2vec2(str(tmp_path / "empty"))


def test_wrong_shapes_are_an_error_not_a_reinit(tmp_path: Path) -> None:
    build_wav2vec2(TINY).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["intermediate_size"] = 48
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        ModelLoadError,
        match=r"intermediate_dense\.bias has shape \(64,\) in the checkpoint but \(48,\)",
    ):
        load_wav2vec2(str(tmp_path))


def test_loads_ctc_checkpoint_encoder_and_rejects_other_types(tmp_path: Path) -> None:
    torch.manual_seed(0)
    ctc = Wav2Vec2ForCTC(wav2vec2_config(TINY, vocab_size=7)).eval()
    ctc.save_pretrained(tmp_path / "ctc")
    encoder = load_wav2vec2(str(tmp_path / "ctc")).eval()
    for name, tensor in ctc.wav2vec2.state_dict().items():
        assert torch.equal(encoder.state_dict()[name], tensor), name
    config = json.loads((tmp_path / "ctc" / "config.json").read_text())
    config["model_type"] = "bert"
    (tmp_path / "ctc" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="model_type"):
        load_wav2vec2(str(tmp_path / "ctc"))


def test_missing_encoder_weights_are_an_error(tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    build_wav2vec2(TINY).save_pretrained(tmp_path)
    state = load_file(str(tmp_path / "model.safetensors"))
    del state["encoder.layers.1.final_layer_norm.weight"]
    save_file(state, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match=r"missing.*layers\.1\.final_layer_norm\.weight"):
        load_wav2vec2(str(tmp_path))


def test_config_from_yaml_dict_and_overrides() -> None:
    cfg = from_dict(EncoderConfig, {"size": "mini", "mode": "adapters", "layerdrop": 0.05})
    config = wav2vec2_config(cfg)
    assert (config.hidden_size, config.num_hidden_layers, config.layerdrop) == (192, 4, 0.05)
    assert config.mask_time_prob == 0.05  # preset value kept when the field is None


def _xlsr_300m_parameter_count(config: Wav2Vec2Config) -> int:
    """Parameters of the XLS-R 300M encoder, from its architecture numbers."""
    d, ffn, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    conv, c_in = 0, 1
    for c, k in zip(config.conv_dim, config.conv_kernel, strict=True):
        conv += c * c_in * k + c + 2 * c  # weight + bias + LayerNorm
        c_in = c
    projection = 2 * c_in + c_in * d + d  # LayerNorm + Linear
    k, groups = config.num_conv_pos_embeddings, config.num_conv_pos_embedding_groups
    pos_conv = d * (d // groups) * k + k + d  # weight-norm v + g (dim 2) + bias
    layer = 4 * (d * d + d) + 2 * 2 * d + (d * ffn + ffn) + (ffn * d + d)
    masked_spec_embed = d
    return conv + projection + pos_conv + 2 * d + layers * layer + masked_spec_embed


def test_paper_preset_parameter_counts_on_meta_device() -> None:
    start = time.perf_counter()
    cfg = EncoderConfig(size="paper", mode="adapters")
    config = wav2vec2_config(cfg)
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads) == (
        24,
        1024,
        16,
    )
    assert config.intermediate_size == 4096 and config.conv_dim == (512,) * 7
    with torch.device("meta"):
        encoder = SpeechEncoder.from_config(cfg)
    counts = encoder_parameter_summary(encoder)
    expected = _xlsr_300m_parameter_count(config)
    assert counts["encoder"] == expected == 315_438_720
    assert counts["feature_encoder"] == 6_656 + 4 * 787_968 + 2 * 525_824
    assert counts["adapters"] == 24 * 2 * (2 * 1024 * 256 + 256 + 1024) == 25_227_264
    assert counts["trainable"] == counts["adapters_trainable"] == counts["adapters"]
    assert counts["total"] == counts["encoder"] + counts["adapters"]
    assert time.perf_counter() - start < 30


# --- loading helpers (samu_st.models.loading), used by every model builder ---------------------


def test_local_folder_checks(tmp_path: Path) -> None:
    from samu_st.models.loading import require_local_folder

    assert require_local_folder(tmp_path) == tmp_path
    with pytest.raises(ModelLoadError, match=r"works offline.*local folder"):
        require_local_folder("sentence-transformers/LaBSE", "text teacher")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ModelLoadError, match="must be a folder"):
        require_local_folder(tmp_path / "file")


def test_state_dict_files_check_names_and_shapes(tmp_path: Path) -> None:
    from samu_st.models.loading import load_into, load_state_dict, save_state_dict

    source = torch.nn.Linear(3, 2)
    save_state_dict(source.state_dict(), tmp_path / "w.safetensors")
    target = torch.nn.Linear(3, 2)
    load_into(target, tmp_path / "w.safetensors")
    assert torch.equal(target.weight, source.weight)
    with pytest.raises(
        ModelLoadError, match=r"tensor weight has shape \(2, 3\) in the file but \(4, 3\)"
    ):
        load_into(torch.nn.Linear(3, 4), tmp_path / "w.safetensors")
    with pytest.raises(ModelLoadError, match="tensor bias is missing"):
        save_state_dict({"weight": source.weight}, tmp_path / "partial.safetensors")
        load_into(torch.nn.Linear(3, 2), tmp_path / "partial.safetensors")
    with pytest.raises(ModelLoadError, match="unexpected tensor extra"):
        save_state_dict(
            {**source.state_dict(), "extra": torch.zeros(1)}, tmp_path / "x.safetensors"
        )
        load_into(torch.nn.Linear(3, 2), tmp_path / "x.safetensors")
    # torch files are read with weights_only=True: arbitrary pickled objects are refused
    torch.save(source.state_dict(), tmp_path / "w.bin")
    assert torch.equal(load_state_dict(tmp_path / "w.bin")["bias"], source.bias)
    torch.save({"weight": source.weight, "evil": _Unsafe()}, tmp_path / "evil.bin")
    with pytest.raises(ModelLoadError, match="cannot read the weights"):
        load_state_dict(tmp_path / "evil.bin")


class _Unsafe:
    """Stands for an arbitrary object in a pickle."""


def test_sharded_checkpoint_with_adapters_loads(tmp_path: Path) -> None:
    torch.manual_seed(0)
    encoder = SpeechEncoder.from_config(EncoderConfig(size="tiny", mode="adapters"))
    for p in encoder.parameters():
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.1)
    encoder.model.save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    loaded = load_wav2vec2(str(tmp_path))
    for name, tensor in encoder.model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
