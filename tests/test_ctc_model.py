"""CTC model: built from presets or encoder folders, loadable by transformers as is."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import (
    Wav2Vec2CTCTokenizer,
    Wav2Vec2FeatureExtractor,
    Wav2Vec2ForCTC,
    Wav2Vec2Processor,
)

from samu_st.models.adapters import bottleneck_adapters
from samu_st.models.ctc import build_ctc_model, ctc_encoder, load_ctc_model, save_ctc_model
from samu_st.models.encoder import EncoderConfig, SpeechEncoder, build_wav2vec2, load_wav2vec2

TINY = EncoderConfig(size="tiny")
VOCAB = {"[PAD]": 0, "[UNK]": 1, "|": 2, "a": 3, "b": 4, "c": 5}


def _tokenizer(folder: Path) -> Wav2Vec2CTCTokenizer:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(VOCAB))
    return Wav2Vec2CTCTokenizer(
        str(folder / "vocab.json"), unk_token="[UNK]", pad_token="[PAD]", word_delimiter_token="|"
    )


def _audio() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return torch.randn(2, 8000, generator=gen), torch.tensor([[1] * 8000, [1] * 5000 + [0] * 3000])


def test_round_trip_through_transformers_classes(tmp_path: Path) -> None:
    torch.manual_seed(0)
    tokenizer = _tokenizer(tmp_path / "tok")
    model = build_ctc_model(TINY, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)
    assert model.config.ctc_zero_infinity and model.config.ctc_loss_reduction == "mean"
    assert all(not p.requires_grad for p in model.wav2vec2.feature_extractor.parameters())
    assert model.lm_head.weight.requires_grad
    extractor = Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=16000,
        padding_value=0.0,
        do_normalize=True,
        return_attention_mask=True,
    )
    save_ctc_model(model.eval(), tmp_path / "ctc", tokenizer, extractor)
    loaded = Wav2Vec2ForCTC.from_pretrained(tmp_path / "ctc", local_files_only=True).eval()
    processor = Wav2Vec2Processor.from_pretrained(tmp_path / "ctc", local_files_only=True)
    wav, mask = _audio()
    with torch.no_grad():
        expected = model(wav, attention_mask=mask).logits
        torch.testing.assert_close(loaded(wav, attention_mask=mask).logits, expected)
    assert processor.tokenizer.decode([3, 3, 0, 4, 2, 5]) == "ab c"
    assert processor.feature_extractor.return_attention_mask
    ours, our_processor = load_ctc_model(tmp_path / "ctc")
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(wav, attention_mask=mask).logits, expected)
    assert our_processor.tokenizer.pad_token_id == 0


def test_ctc_loss_is_finite_for_impossible_labels() -> None:
    torch.manual_seed(0)
    model = build_ctc_model(TINY, vocab_size=6, pad_token_id=0).train()
    labels = torch.tensor([[3] * 40, [4, 5, -100] + [-100] * 37])  # 40 labels > 24 frames
    wav, mask = _audio()
    loss = model(wav, attention_mask=mask, labels=labels).loss
    assert torch.isfinite(loss) and loss.item() > 0


def test_build_from_encoder_folder_keeps_encoder_weights(tmp_path: Path) -> None:
    torch.manual_seed(0)
    encoder = build_wav2vec2(TINY)
    SpeechEncoder(encoder, "adapters")
    for adapter in bottleneck_adapters(encoder):
        torch.nn.init.normal_(adapter.up.weight, std=0.1)
    encoder.save_pretrained(tmp_path / "enc")
    cfg = EncoderConfig(pretrained=str(tmp_path / "enc"), mode="full")
    model = build_ctc_model(cfg, vocab_size=6, pad_token_id=0)
    for name, tensor in encoder.state_dict().items():
        assert torch.equal(model.wav2vec2.state_dict()[name], tensor), name
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    conv = sum(p.numel() for p in model.wav2vec2.feature_extractor.parameters())
    assert trainable == total - conv
    adapters_only = build_ctc_model(
        EncoderConfig(pretrained=str(tmp_path / "enc"), mode="adapters"), 6, 0
    )
    trainable_names = {n for n, p in adapters_only.named_parameters() if p.requires_grad}
    assert {"lm_head.weight", "lm_head.bias"} <= trainable_names
    assert all("bottleneck_adapter" in n or n.startswith("lm_head") for n in trainable_names)


def test_encoder_of_a_ctc_model_for_the_ctc_xlsr_baseline(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_ctc_model(TINY, vocab_size=6, pad_token_id=0).eval()
    save_ctc_model(model, tmp_path / "ctc", _tokenizer(tmp_path / "tok"))
    encoder = ctc_encoder(model)
    from_folder = load_wav2vec2(str(tmp_path / "ctc")).eval()
    wav, mask = _audio()
    lengths = mask.sum(1)
    with torch.no_grad():
        torch.testing.assert_close(
            SpeechEncoder(from_folder)(wav, lengths).hidden,
            SpeechEncoder(encoder)(wav, lengths).hidden,
        )


def test_save_rejects_tokenizer_that_does_not_fit(tmp_path: Path) -> None:
    tokenizer = _tokenizer(tmp_path / "tok")
    with pytest.raises(ValueError, match="pad id"):
        save_ctc_model(build_ctc_model(TINY, 8, 1), tmp_path / "a", tokenizer)
    with pytest.raises(ValueError, match="only 4 outputs"):
        save_ctc_model(build_ctc_model(TINY, 4, 0), tmp_path / "b", tokenizer)
    with pytest.raises(ValueError, match="pad_token_id"):
        build_ctc_model(TINY, 4, 4)
