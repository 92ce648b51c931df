"""SAMU model: embedding shapes, padding invariance, parameter groups, folder round trip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import Wav2Vec2Model

from samu_st.errors import ModelLoadError
from samu_st.losses import cosine_distance_loss
from samu_st.models.encoder import EncoderConfig, EncoderMode, SpeechEncoder, build_wav2vec2
from samu_st.models.samu import SamuModel

TINY = EncoderConfig(size="tiny")


def _samu(out_dim: int | None = 24, mode: EncoderMode = "full") -> SamuModel:
    torch.manual_seed(0)
    model = SamuModel.from_config(EncoderConfig(size="tiny", mode=mode), out_dim)
    torch.nn.init.normal_(model.pooling.query, std=1.0)
    return model.eval()


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    wav = 50.0 * torch.randn(3, 9000, generator=gen)
    lengths = torch.tensor([4000, 9000, 6500])
    for i, n in enumerate(lengths.tolist()):
        wav[i, :n] = torch.randn(n, generator=gen)
    return wav, lengths


def test_embedding_shape_projection_and_padding_invariance() -> None:
    samu = _samu(24)
    wav, lengths = _batch()
    with torch.no_grad():
        batched = samu(wav, lengths)
        alone = samu(wav[:1, :4000], lengths[:1])
    assert batched.shape == (3, 24)
    torch.testing.assert_close(batched[0], alone[0], atol=1e-5, rtol=0)
    assert isinstance(_samu(None).projection, torch.nn.Identity)
    assert isinstance(_samu(32).projection, torch.nn.Identity)  # tiny D is 32
    assert samu.projection.weight.shape == (24, 32)


def test_parameter_groups_by_mode() -> None:
    full = _samu(24)
    groups = full.parameter_groups()
    head = 32 + 24 * 32 + 24
    assert sum(p.numel() for p in groups["head"]) == head
    encoder_trainable = sum(p.numel() for p in full.encoder.parameters() if p.requires_grad)
    assert sum(p.numel() for p in groups["encoder"]) == encoder_trainable > 0
    frozen = _samu(24, mode="frozen").parameter_groups()
    assert frozen["encoder"] == [] and sum(p.numel() for p in frozen["head"]) == head


def test_training_step_reduces_cosine_loss() -> None:
    samu = _samu(24).train()
    samu.encoder.model.config.mask_time_prob = 0.0
    wav, lengths = _batch()
    target = torch.randn(3, 24, generator=torch.Generator().manual_seed(5))
    groups = samu.parameter_groups()
    optimizer = torch.optim.Adam(
        [{"params": groups["encoder"], "lr": 1e-3}, {"params": groups["head"], "lr": 1e-2}]
    )
    losses = []
    for _ in range(15):
        loss = cosine_distance_loss(samu(wav, lengths), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_save_load_round_trip_and_encoder_folder(tmp_path: Path) -> None:
    samu = _samu(24, mode="adapters")
    for p in samu.parameters():
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.05)
    samu.save(tmp_path / "samu")
    assert json.loads((tmp_path / "samu" / "samu_config.json").read_text())["out_dim"] == 24
    loaded = SamuModel.load(tmp_path / "samu").eval()
    assert loaded.encoder.mode == "adapters"
    wav, lengths = _batch()
    with torch.no_grad():
        torch.testing.assert_close(loaded(wav, lengths), samu(wav, lengths))
    # the encoder folder is a plain Hugging Face wav2vec2 folder...
    plain = Wav2Vec2Model.from_pretrained(tmp_path / "samu" / "encoder", local_files_only=True)
    assert plain.config.hidden_size == 32
    # ...and step 3's encoder source, adapters included
    step3 = SpeechEncoder.from_config(
        EncoderConfig(pretrained=str(tmp_path / "samu" / "encoder"), mode="adapters")
    ).eval()
    with torch.no_grad():
        torch.testing.assert_close(
            step3(wav, lengths).hidden, samu.encoder.eval()(wav, lengths).hidden
        )
    frozen = SamuModel.load(tmp_path / "samu", mode="frozen")
    assert sum(p.numel() for p in frozen.encoder.parameters() if p.requires_grad) == 0


def test_load_errors(tmp_path: Path) -> None:
    samu = SamuModel(SpeechEncoder(build_wav2vec2(TINY)), 16)
    samu.save(tmp_path)
    (tmp_path / "samu_config.json").unlink()
    with pytest.raises(ModelLoadError, match=r"samu_config\.json: missing"):
        SamuModel.load(tmp_path)
    SamuModel(SpeechEncoder(build_wav2vec2(TINY)), 24).save(tmp_path / "other")
    samu.save(tmp_path)
    (tmp_path / "head.safetensors").write_bytes(
        (tmp_path / "other" / "head.safetensors").read_bytes()
    )
    with pytest.raises(ModelLoadError, match=r"projection\.weight has shape \(24, 32\)"):
        SamuModel.load(tmp_path)


def test_load_refuses_an_encoder_of_another_family_than_recorded(tmp_path: Path) -> None:
    SamuModel(SpeechEncoder(build_wav2vec2(TINY)), 16).save(tmp_path)
    config = json.loads((tmp_path / "samu_config.json").read_text())
    assert config["encoder_family"] == "wav2vec2"
    (tmp_path / "samu_config.json").write_text(json.dumps({**config, "encoder_family": "wavlm"}))
    with pytest.raises(ModelLoadError, match=r"wav2vec2 encoder but samu_config\.json says wavlm"):
        SamuModel.load(tmp_path)
    del config["encoder_family"]  # folders from before issue #18 load as before
    (tmp_path / "samu_config.json").write_text(json.dumps(config))
    assert SamuModel.load(tmp_path).encoder.family == "wav2vec2"
