"""model-summary: counts of the paper's translator against the architecture formulas."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from num2words import num2words
from transformers import MBartForConditionalGeneration, Wav2Vec2Model

from samu_st.cli import main
from samu_st.config import from_dict, load_yaml
from samu_st.models.decoder import DecoderConfig, mbart_config
from samu_st.models.encoder import EncoderConfig, wav2vec2_config
from samu_st.models.summary import ModelSummary, summarize, summarize_config
from samu_st.models.tokenizer import train_target_tokenizer
from samu_st.models.translator import TranslatorConfig, build_translator

PAPER = Path(__file__).resolve().parents[1] / "configs" / "paper.yaml"


def _xlsr_300m() -> int:
    """wav2vec2-xls-r-300m: conv front end, feature projection, positional conv, 24 layers."""
    d, f = 1024, 4096
    conv = 512 * 10 + 512 + 2 * 512  # first conv (1 → 512, kernel 10, bias) + its LayerNorm
    conv += sum(512 * 512 * k + 512 + 2 * 512 for k in (3, 3, 3, 3, 2, 2))
    projection = 2 * 512 + 512 * d + d  # LayerNorm(512) + Linear(512, d)
    positional = d * (d // 16) * 128 + 128 + d  # grouped conv, weight norm (v, g), bias
    layer = 4 * (d * d + d) + 2 * d + (d * f + f + f * d + d) + 2 * d
    masked_spec_embed = d
    return conv + projection + positional + masked_spec_embed + 2 * d + 24 * layer


@pytest.fixture(scope="module")
def paper() -> ModelSummary:
    cfg = from_dict(TranslatorConfig, load_yaml(PAPER)["model"])
    return summarize_config(cfg)


def test_paper_counts_match_the_architecture(paper: ModelSummary) -> None:
    d, f, layers, vocab = 1024, 4096, 12, 250054 + 2  # + <lang:ca>, <lang:cy>
    hidden = d // 4
    adapters = 24 * 2 * (d * hidden + hidden + hidden * d + d)
    cross_attention = layers * 4 * (d * d + d)
    layer_norms = (layers * 3 + 2) * 2 * d
    other = layers * (4 * (d * d + d) + d * f + f + f * d + d)
    embeddings = vocab * d + (1024 + 2) * d  # tied output projection counted once
    g = paper.groups
    assert g["encoder"].total == _xlsr_300m() == 315_438_720
    assert g["encoder"].trainable == 0
    assert (g["bottleneck_adapters"].total, g["bottleneck_adapters"].trainable) == (adapters,) * 2
    assert g["decoder_cross_attention"].trainable == cross_attention
    assert g["decoder_layer_norms"].trainable == layer_norms
    assert (g["decoder_other"].total, g["decoder_other"].trainable) == (other, 0)
    assert (g["embeddings"].total, g["embeddings"].trainable) == (embeddings, 0)
    assert g["length_adaptor"].total == g["projection"].total == 0
    assert paper.trainable == adapters + cross_attention + layer_norms
    assert (
        paper.total == _xlsr_300m() + adapters + cross_attention + layer_norms + other + embeddings
    )
    # the paper (§2): ~700M in total, 75M fine-tuned
    assert 74e6 < paper.trainable < 77e6
    assert 650e6 < paper.total < 850e6


def test_summary_notes_explain_the_differences(paper: ModelSummary) -> None:
    text = " ".join(paper.notes)
    assert "not read" in text  # the placeholder folders do not exist here
    assert "75.7M" in text and "257.1M" in text and "MBART encoder" in text


def _tiny_config(tmp_path: Path, mode: str) -> Path:
    model = {
        "encoder": {"size": "tiny", "mode": mode},
        "decoder": {"preset": "tiny"},
        "length_adaptor_layers": 1,
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({"model": model, "training": {"ignored": True}}))
    return path


def test_cli_json_and_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _tiny_config(tmp_path, "full")
    assert main(["model-summary", str(path), "--json", "--vocab-size", "64"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data) == {"total", "trainable", "groups"}
    groups = data["groups"]
    assert data["total"] == sum(g["total"] for g in groups.values())
    assert groups["length_adaptor"]["trainable"] == 32 * 64 * 3 + 64
    assert groups["embeddings"]["total"] == 64 * 16 + 66 * 16
    assert groups["bottleneck_adapters"]["total"] == 0
    assert main(["model-summary", str(path)]) == 0
    out = capsys.readouterr().out
    assert "TOTAL" in out and "decoder_cross_attention" in out and "paper (§2)" in out


def test_cli_config_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("training: {}\n")
    assert main(["model-summary", str(path)]) == 2
    assert "no `model:` section" in capsys.readouterr().err
    path.write_text("model:\n  encoder: {size: tiny, mood: adapters}\n")
    assert main(["model-summary", str(path)]) == 2
    assert "mood" in capsys.readouterr().err


def test_meta_counts_equal_a_real_build_from_folders(tmp_path: Path) -> None:
    """Folders that exist contribute their config.json and tokenizer; counts match a real build."""
    tokenizer = train_target_tokenizer([num2words(i) for i in range(100)], vocab_size=80)
    tokenizer.save(tmp_path / "tok")
    Wav2Vec2Model(wav2vec2_config(EncoderConfig(size="tiny"))).save_pretrained(tmp_path / "enc")
    mbart = MBartForConditionalGeneration(mbart_config("tiny", len(tokenizer) - 3))
    mbart.save_pretrained(tmp_path / "mbart")  # 3 tokens short: the decoder gets resized
    cfg = TranslatorConfig(
        encoder=EncoderConfig(pretrained=str(tmp_path / "enc"), size="paper", mode="adapters"),
        decoder=DecoderConfig(pretrained=str(tmp_path / "mbart"), preset="paper"),
        length_adaptor_layers=1,
        tokenizer=str(tmp_path / "tok"),
    )
    counted = summarize_config(cfg)
    assert not any("not read" in note for note in counted.notes)
    real = summarize(build_translator(cfg, tokenizer))
    assert (counted.total, counted.trainable, counted.groups) == (
        real.total,
        real.trainable,
        real.groups,
    )
    assert counted.groups["embeddings"].total == len(tokenizer) * 16 + 66 * 16
    assert counted.total < 1e6  # the tiny folders were read, not the paper presets
