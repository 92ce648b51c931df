"""The synthetic Irish corpus: sentences that exercise the Irish normaliser, a real Common Voice
folder layout (TSV columns, 48 kHz mp3), disjoint test speakers, determinism."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import soundfile as sf

from samu_st.data.importers import ImportOptions, import_commonvoice
from samu_st.data.irish import (
    CV_COLUMNS,
    SENTENCES,
    IrishCorpusConfig,
    plan_clips,
    prepare_irish,
    split_sentences,
)
from samu_st.data.manifest import read_manifest
from samu_st.data.tsv import read_tsv
from samu_st.errors import ConfigError, SamuError
from samu_st.text import build_char_vocab, normalize_irish

TINY = IrishCorpusConfig(
    sentences=8,
    train_per_sentence=2,
    dev_clips=3,
    test_clips=3,
    train_speakers=3,
    dev_speakers=2,
    test_speakers=2,
)


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_sentences_exercise_the_notebook_normaliser() -> None:
    assert 150 <= len(SENTENCES) <= 300
    assert len(set(SENTENCES)) == len(SENTENCES)
    normalised = [normalize_irish(s) for s in SENTENCES]
    words = {w for s in normalised for w in s.split()}
    # n-/t- before a capital vowel gets its hyphen back; before a small one it is written
    assert {"n-éirinn", "t-uasal", "n-athair", "t-uachtarán"} <= words
    assert {"t-uisce", "t-arán", "n-árasán"} <= words
    # straight and typographic apostrophes end up the same; quotes and dashes go
    assert {"d'ól", "d'ith", "m'aintín"} <= words
    assert "dúirt sé slán liom" in normalised
    assert "tá mar is eol duit an siopa dúnta" in normalised
    vocab = build_char_vocab(normalised)
    assert set("áéíóú'-") <= set(vocab)
    assert not set(vocab) & set(",.?!;:“”‘’–")
    # a small vocabulary, words repeated across sentences, short sentences
    assert len(words) < 400
    assert max(len(s.split()) for s in normalised) <= 9


def test_heldout_sentences_never_reach_train() -> None:
    cfg = IrishCorpusConfig(heldout_sentences=20)
    split = split_sentences(cfg)
    assert len(split["dev"]) == 20 and split["dev"] == split["test"]
    assert not set(split["train"]) & set(split["dev"])
    assert len(split["train"]) == len(SENTENCES) - 20
    shared = split_sentences(IrishCorpusConfig())
    assert shared["train"] == shared["test"] == list(SENTENCES)
    with pytest.raises(ConfigError, match="more than one split"):
        IrishCorpusConfig(dev_variants=("m1",))


def test_plan_has_disjoint_speakers() -> None:
    clips = plan_clips(TINY)
    speakers = {s: {c.speaker for c in clips if c.split == s} for s in ("train", "dev", "test")}
    assert [len(speakers[s]) for s in ("train", "dev", "test")] == [3, 2, 2]
    variants = {s: {spk.variant for spk in v} for s, v in speakers.items()}
    assert not variants["train"] & variants["test"]
    assert not variants["train"] & variants["dev"]
    assert not variants["dev"] & variants["test"]
    assert sum(c.split == "train" for c in clips) == 16


def test_common_voice_folder_is_deterministic_and_importable(tmp_path: Path) -> None:
    a = prepare_irish(tmp_path / "a" / "ga-IE", TINY, progress=False)
    b = prepare_irish(tmp_path / "b" / "ga-IE", TINY, progress=False)
    assert _digests(a) == _digests(b)
    rows = {s: read_tsv(a / f"{s}.tsv") for s in ("train", "dev", "test", "validated")}
    assert [len(rows[s]) for s in ("train", "dev", "test", "validated")] == [16, 3, 3, 22]
    header = (a / "train.tsv").read_text(encoding="utf-8").splitlines()[0].split("\t")
    assert tuple(header) == CV_COLUMNS
    clients = {s: {r.fields["client_id"] for r in rows[s]} for s in ("train", "dev", "test")}
    assert not clients["train"] & (clients["dev"] | clients["test"])
    assert all(len(c) == 128 for c in clients["train"])
    first = rows["train"][0].fields
    assert first["locale"] == "ga-IE" and first["sentence"] == SENTENCES[0]
    info = sf.info(a / "clips" / first["path"])
    assert (info.format, info.samplerate, info.channels) == ("MP3", 48000, 1)
    assert 0.3 < info.duration < 4.0

    report = import_commonvoice(a, tmp_path / "manifests", options=ImportOptions(progress=False))
    assert report.kept == {"train": {"ga-IE": 16}, "dev": {"ga-IE": 3}, "test": {"ga-IE": 3}}
    utts = read_manifest(tmp_path / "manifests" / "test" / "ga-IE.jsonl")
    assert {u.source_text for u in utts} <= set(SENTENCES[:8])

    # a second call with the same config does nothing; another config replaces the corpus
    mtime = (a / "corpus.json").stat().st_mtime_ns
    assert prepare_irish(a, TINY, progress=False) == a
    assert (a / "corpus.json").stat().st_mtime_ns == mtime


def test_never_overwrites_a_foreign_folder(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(SamuError, match="not overwriting"):
        prepare_irish(tmp_path / "mine", TINY, progress=False)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
