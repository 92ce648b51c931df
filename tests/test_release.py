"""The shipped-checkpoint recipe: corpora, MBART-50 tokenizer layout, packaging, ``packaged:``."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import MBartForConditionalGeneration, Wav2Vec2Model

from samu_st import packaged
from samu_st.atomic import replace_folder
from samu_st.data.manifest import read_manifest
from samu_st.data.release_corpus import ReleaseCorpusConfig, build_release_corpus, plan_speech
from samu_st.errors import ConfigError, DataError, ModelLoadError
from samu_st.models.decoder import DecoderConfig
from samu_st.models.encoder import EncoderConfig
from samu_st.models.mbart50_format import code_id, vocab_size, write_mbart50_tokenizer
from samu_st.models.tokenizer import TargetTokenizer
from samu_st.release import package_decoder, package_encoder, write_card
from samu_st.steps.pretrain_text import read_text_files
from standins.mbart50 import write_mbart50
from standins.xlsr import write_xlsr

TINY = ReleaseCorpusConfig(voices=("fr-fr", "de", "kl"), covost_clips=3, other_clips=2,
                           texts_per_language=20)  # fmt: skip


def test_corpus_speaks_only_training_variants_and_is_deterministic(tmp_path: Path) -> None:
    jobs = plan_speech(TINY)
    assert [j.voice for j, _ in jobs] == ["de"] * 3 + ["fr-fr"] * 2 + ["kl"] * 2
    assert [lang for _, lang in jobs][:5] == ["de"] * 3 + ["fr"] * 2
    from samu_st.data.mini_covost import MiniCovostConfig

    held_out = set(MiniCovostConfig().dev_variants) | set(MiniCovostConfig().test_variants)
    assert not {j.speaker.variant for j, _ in jobs} & held_out
    assert [j.text for j, _ in plan_speech(TINY)] == [j.text for j, _ in jobs]

    root = build_release_corpus(TINY, tmp_path / "c", workers=1)
    utts = list(read_manifest(root / "unlabeled.jsonl"))
    meta = json.loads((root / "corpus.json").read_text())
    assert len(utts) + meta["summary"]["silent_skipped"] + len(
        meta["summary"]["espeak_failures"]
    ) == len(jobs)
    assert all((root / u.audio).is_file() and u.source_text == "" for u in utts)
    texts = sorted((root / "text").glob("*.tsv"))
    assert "en.tsv" in {p.name for p in texts} and "ca.tsv" not in {p.name for p in texts}
    stamp = (root / "corpus.json").stat().st_mtime_ns
    assert build_release_corpus(TINY, root) == root  # a second call reuses it
    assert (root / "corpus.json").stat().st_mtime_ns == stamp


def test_unknown_voice_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="xx-nowhere"):
        plan_speech(ReleaseCorpusConfig(voices=("xx-nowhere",)))


def test_text_files_name_file_and_line(tmp_path: Path) -> None:
    good = tmp_path / "t" / "fr.tsv"
    good.parent.mkdir()
    good.write_text("fr\tbonjour  le monde\n\nen\thello\n", encoding="utf-8")
    assert list(read_text_files([str(good.parent)])) == [
        ("bonjour le monde", "fr"),
        ("hello", "en"),
    ]
    bad = tmp_path / "bad.tsv"
    bad.write_text("fr\tok\nno tab here\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.tsv:2"):
        list(read_text_files([str(bad)]))


def test_mbart50_tokenizer_layout(tmp_path: Path) -> None:
    from num2words import num2words

    texts = [num2words(i, lang=lang) for i in range(300) for lang in ("en", "fr", "de")]
    folder = write_mbart50_tokenizer(tmp_path / "tok", texts, 60)
    tok = TargetTokenizer.load(folder)  # a pristine MBART-50 folder: ca, cy get new tokens
    assert tok.kind == "mbart50"
    assert tok.lang_token_id("en") == code_id("en_XX", 60) == 60 + 1 + 3
    assert tok.lang_token_id("fr") == code_id("fr_XX", 60)
    assert len(tok) == vocab_size(60) + 2  # <lang:ca>, <lang:cy>


def test_packaged_encoder_is_fp16_on_disk_fp32_loaded(tmp_path: Path) -> None:
    src = write_xlsr(tmp_path / "xlsr")
    final = tmp_path / "final"
    Wav2Vec2Model.from_pretrained(str(src), dtype=torch.float32).save_pretrained(final)
    dest = tmp_path / "pkg.tmp"
    dest.mkdir()
    package_encoder(final, dest)
    with safe_open(str(dest / "model.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}  # noqa: SIM118
    loaded = Wav2Vec2Model.from_pretrained(str(dest), local_files_only=True)
    assert next(loaded.parameters()).dtype == torch.float32
    ref = Wav2Vec2Model.from_pretrained(str(final), local_files_only=True)
    for (name, a), b in zip(ref.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.allclose(a.half().float(), b), name
    facts = {"command": "c", "updates": 1, "seed": 0, "wall_minutes": 0.1, "machine": "m",
             "data": "d", "date": "today"}  # fmt: skip
    write_card(dest, "mini-xls-r", facts, "card")
    sums = json.loads((dest / "release.json").read_text())["sha256"]
    assert (
        sums["model.safetensors"]
        == hashlib.sha256((dest / "model.safetensors").read_bytes()).hexdigest()
    )
    assert "| `model.safetensors` |" in (dest / "README.md").read_text()
    shipped = replace_folder(dest, tmp_path / "mini-xls-r")
    assert shipped.is_dir() and not dest.exists()


def test_packaged_decoder_drops_rows_added_for_ca_cy(tmp_path: Path) -> None:
    standin = write_mbart50(tmp_path / "mbart")
    tok = TargetTokenizer.load(standin)
    model = MBartForConditionalGeneration.from_pretrained(str(standin))
    model.resize_token_embeddings(len(tok))  # as pretrain-text does
    model.save_pretrained(tmp_path / "final")
    dest = tmp_path / "pkg"
    dest.mkdir()
    package_decoder(tmp_path / "final", standin, 160, dest)
    shipped = MBartForConditionalGeneration.from_pretrained(str(dest), local_files_only=True)
    assert shipped.config.vocab_size == vocab_size(160)
    assert next(shipped.parameters()).dtype == torch.float32
    assert TargetTokenizer.load(dest).lang_token_id("en") == code_id("en_XX", 160)


def test_packaged_names_resolve_in_configs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(packaged, "packaged_dir", lambda: tmp_path)
    with pytest.raises(ModelLoadError, match="mini-xls-r"):
        EncoderConfig(pretrained="packaged:mini-xls-r")
    (tmp_path / "mini-xls-r").mkdir()
    (tmp_path / "mini-xls-r" / "config.json").write_text("{}")
    assert EncoderConfig(pretrained="packaged:mini-xls-r").pretrained == str(
        tmp_path / "mini-xls-r"
    )
    assert EncoderConfig(pretrained="/x/y").pretrained == "/x/y"
    with pytest.raises(ModelLoadError, match="no shipped checkpoint 'nope'"):
        DecoderConfig(pretrained="packaged:nope")


@pytest.mark.parametrize("name", packaged.CHECKPOINTS)
def test_shipped_checkpoint_matches_its_card(name: str) -> None:
    folder = packaged.packaged_dir() / name
    if not folder.is_dir():
        pytest.fail(f"{folder}: the shipped checkpoint is missing (samu-st release recipes/...)")
    facts = json.loads((folder / "release.json").read_text())
    for file, digest in facts["sha256"].items():
        assert hashlib.sha256((folder / file).read_bytes()).hexdigest() == digest, file
    assert (folder / "README.md").is_file()
    size = sum(p.stat().st_size for p in folder.iterdir())
    assert size < 20_000_000, f"{name}: {size} bytes"


def test_pretrain_text_reads_text_files_only_for_its_training_data(tmp_path: Path) -> None:
    from samu_st.steps.data import DataConfig
    from samu_st.steps.pretrain_text import PretrainTextConfig, read_examples

    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "en.tsv").write_text("en\tone two\nfr\tun deux\n", encoding="utf-8")
    cfg = PretrainTextConfig(out_dir=str(tmp_path / "o"), data=DataConfig(),
                             text_files=(str(tmp_path / "t"),))  # fmt: skip
    sources, targets, langs = read_examples(cfg, cfg.data, text_files=True)
    assert (sources, targets, langs) == (
        ["one two", "un deux"],
        ["one two", "un deux"],
        ["en", "fr"],
    )
    with pytest.raises(ConfigError, match="no manifest selected"):  # a dev set never reads them
        read_examples(cfg, DataConfig())
