"""mini-CoVoST synthesis: manifests, speakers, determinism, caching, atomicity, sizes."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from samu_st.audio import audio_info
from samu_st.config import load_config
from samu_st.data import mini_covost as mc
from samu_st.data.manifest import read_manifest, resolve_audio
from samu_st.data.mini_covost import MiniCovostConfig, prepare_mini, train_size
from samu_st.data.numbers import arabic_phonemes, english_words, source_spelling
from samu_st.data.speakers import (
    Speaker,
    espeak_variants,
    espeak_voices,
    synthesize,
    trim_silence,
)
from samu_st.errors import ConfigError, SamuError
from samu_st.languages import BY_CODE, GROUPS, LANGUAGES
from samu_st.resources import resource_path

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

# fr high (264 h), it mid (44 h), ar low (2 h, spoken from phonemes), mn skipped (no voice).
TINY = MiniCovostConfig(
    seed=3,
    languages=("fr", "it", "ar", "mn"),
    train_per_hour=0.1,
    train_min=3,
    train_max=30,
    dev_per_language=4,
    test_per_language=5,
    unlabeled_per_language=2,
    train_speakers=6,
    dev_speakers=2,
    test_speakers=3,
)


def _variant(speaker_id: str) -> str:
    return speaker_id.rsplit("-", 2)[0]


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepare_mini(tmp_path_factory.mktemp("a") / "mini", TINY, workers=2, progress=False)


def _manifests(root: Path) -> dict[str, dict[str, list]]:
    return {
        split: {p.stem: read_manifest(p) for p in sorted((root / split).glob("*.jsonl"))}
        for split in ("train", "dev", "test")
    }


def test_manifests_validate_and_point_at_16k_audio(corpus: Path) -> None:
    meta = json.loads((corpus / "corpus.json").read_text())
    manifests = _manifests(corpus)
    assert {s: sorted(m) for s, m in manifests.items()} == {
        s: ["ar", "fr", "it"] for s in ("train", "dev", "test")
    }
    assert meta["skipped_languages"] == {"mn": "espeak-ng has no Mongolian voice"}
    inputs = {x["code"]: x["espeak_input"] for x in meta["languages"]}
    assert inputs == {"fr": "digits", "it": "digits", "ar": "phonemes"}
    assert [len(manifests[s]["fr"]) for s in ("train", "dev", "test")] == [26, 4, 5]
    for split, by_lang in manifests.items():
        for lang, utts in by_lang.items():
            assert meta["splits"][split][lang]["utterances"] == len(utts)
            for utt in utts:
                assert (utt.split, utt.language) == (split, lang)
                assert utt.audio.startswith("../audio/")  # relative: the folder can move
                info = audio_info(resolve_audio(utt, corpus / split / f"{lang}.jsonl"))
                assert (info.sample_rate, info.channels) == (16000, 1)
                assert info.duration == pytest.approx(utt.duration, abs=1e-6)
                assert 0.3 < utt.duration < 3.0  # short clips: silence trimmed
    fr = manifests["train"]["fr"][0]
    number = next(n for n in range(1000) if english_words(n) == fr.target_text)
    assert fr.source_text == source_spelling(BY_CODE["fr"]).spell(number)
    assert all(
        any("\u0600" <= ch <= "\u06ff" for ch in u.source_text) for u in manifests["dev"]["ar"]
    )


def test_unlabeled_manifest_has_train_and_extra_clips_only(corpus: Path) -> None:
    unlabeled = read_manifest(corpus / mc.UNLABELED_MANIFEST)
    train_ids = {u.id for utts in _manifests(corpus)["train"].values() for u in utts}
    ids = {u.id for u in unlabeled}
    assert train_ids <= ids
    assert len(ids - train_ids) == 2 * 3  # unlabeled_per_language x languages
    assert all(u.split == "unlabeled" and u.source_text == u.target_text == "" for u in unlabeled)
    assert not any("-dev-" in i or "-test-" in i for i in ids)
    assert resolve_audio(unlabeled[0], corpus / mc.UNLABELED_MANIFEST).is_file()


def test_test_speakers_are_disjoint_from_training_speakers(corpus: Path) -> None:
    manifests = _manifests(corpus)
    spk = {s: {u.speaker for us in m.values() for u in us} for s, m in manifests.items()}
    variants = {s: {_variant(x) for x in ids} for s, ids in spk.items()}
    assert variants["train"] <= set(TINY.train_variants)
    assert variants["test"] <= set(TINY.test_variants)
    assert not variants["train"] & variants["test"]
    assert not variants["train"] & variants["dev"]
    assert not variants["dev"] & variants["test"]
    unlabeled = {u.speaker for u in read_manifest(corpus / mc.UNLABELED_MANIFEST)}
    assert {_variant(x) for x in unlabeled} <= set(TINY.train_variants)
    assert len(spk["test"]) >= 2


def test_two_runs_are_byte_identical(corpus: Path, tmp_path: Path) -> None:
    other = prepare_mini(tmp_path / "mini2", TINY, workers=1, progress=False)
    a, b = _files(corpus), _files(other)
    assert sorted(a) == sorted(b)
    assert len([k for k in a if k.endswith(".wav")]) == 26 + 4 + 3 + 3 * (4 + 5 + 2)
    assert [k for k in a if a[k] != b[k]] == []


def test_second_call_is_a_cache_hit(corpus: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = {p: p.stat().st_mtime_ns for p in corpus.rglob("*")}

    def boom(*args: object, **kwargs: object) -> list[int]:
        raise AssertionError("re-synthesised")

    monkeypatch.setattr(mc, "render_all", boom)
    start = time.perf_counter()
    assert prepare_mini(corpus, TINY, progress=False) == corpus
    assert time.perf_counter() - start < 1.0
    assert {p: p.stat().st_mtime_ns for p in corpus.rglob("*")} == before


def test_changed_config_regenerates_and_failure_leaves_nothing(tmp_path: Path) -> None:
    small = MiniCovostConfig(
        languages=("de",), train_min=2, train_max=2, dev_per_language=1, test_per_language=1,
        unlabeled_per_language=0, train_speakers=2, dev_speakers=1, test_speakers=1,
    )  # fmt: skip
    (tmp_path / "c.tmp-999999999").mkdir()  # left by a killed run (no such process)
    out = prepare_mini(tmp_path / "c", small, progress=False)
    assert len(read_manifest(out / "dev" / "de.jsonl")) == 1
    bigger = MiniCovostConfig(**{**small.__dict__, "dev_per_language": 3})
    prepare_mini(out, bigger, progress=False)
    assert len(read_manifest(out / "dev" / "de.jsonl")) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]  # no tmp/old folders left

    def fail(*args: object, **kwargs: object) -> list[int]:
        raise SamuError("espeak-ng crashed")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(mc, "render_all", fail)
        with pytest.raises(SamuError, match="crashed"):
            prepare_mini(tmp_path / "d", small, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]  # no half corpus, no tmp


def test_refuses_to_overwrite_a_folder_that_is_not_a_corpus(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(SamuError, match="not a mini-CoVoST corpus"):
        prepare_mini(tmp_path, TINY, progress=False)
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_train_sizes_follow_covost_resource_groups() -> None:
    cfg = MiniCovostConfig()
    sizes = {lang.code: train_size(lang, cfg) for lang in LANGUAGES if lang.espeak_voice}
    mean = {g: np.mean([sizes[c] for c in codes if c in sizes]) for g, codes in GROUPS.items()}
    assert mean["high"] > 4 * mean["mid"] and mean["mid"] > mean["low"]
    assert min(sizes[c] for c in GROUPS["high"]) > max(sizes[c] for c in GROUPS["mid"])
    assert (sizes["fr"], sizes["it"], sizes["id"]) == (500, 88, 30)
    assert 1800 < sum(sizes.values()) < 2200


def test_yaml_config_matches_defaults_and_bad_configs_fail() -> None:
    assert load_config(MiniCovostConfig, CONFIGS / "mini-covost.yaml") == MiniCovostConfig()
    # the demo's corpus: all 20 languages (issue #15)
    assert load_config(MiniCovostConfig, resource_path("mini-covost-demo.yaml")) == (
        MiniCovostConfig()
    )
    with pytest.raises(ConfigError, match="more than one split"):
        MiniCovostConfig(test_variants=("m1", "f5"))
    with pytest.raises(ConfigError, match="unknown language code"):
        MiniCovostConfig(languages=("xx",))
    with pytest.raises(ConfigError, match="number_max"):
        MiniCovostConfig(number_max=1000)


def test_espeak_has_every_voice_and_variant() -> None:
    voices = {lang.espeak_voice for lang in LANGUAGES if lang.espeak_voice}
    assert voices <= espeak_voices()
    cfg = MiniCovostConfig()
    assert set(cfg.train_variants + cfg.dev_variants + cfg.test_variants) <= espeak_variants()
    assert BY_CODE["zh-CN"].espeak_voice == "cmn"


def test_spellings_and_arabic_phonemes() -> None:
    methods = {c: source_spelling(BY_CODE[c]).method for c in ("fr", "zh-CN", "cy", "ja", "et")}
    assert methods == {
        "fr": "num2words:fr", "zh-CN": "digits", "cy": "digits", "ja": "num2words:ja",
        "et": "digits",
    }  # fmt: skip
    assert source_spelling(BY_CODE["de"]).spell(42) == "zweiundvierzig"
    assert english_words(423) == "four hundred and twenty-three"
    assert arabic_phonemes(0) == "s[ifR"
    assert arabic_phonemes(23) == "Tal'a:Ta wa A-iSR'u:n"
    assert arabic_phonemes(214) == "mi?at'a:n wa ?arb'aA-ata A-'aSar"
    a = synthesize("[[" + arabic_phonemes(707) + "]]", "ar", Speaker("m3", 180, 50))
    b = synthesize("[[" + arabic_phonemes(707) + "]]", "ar", Speaker("m3", 180, 50))
    assert a.dtype == np.int16 and a.size > 8000 and np.array_equal(a, b)


def test_trim_silence_keeps_margin() -> None:
    wav = np.zeros(1000, dtype=np.float32)
    wav[400:500] = 0.5
    assert trim_silence(wav, -40.0, margin=10).size == 120
    assert trim_silence(np.zeros(5, dtype=np.float32), -40.0, margin=10).size == 5
