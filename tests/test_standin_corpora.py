"""The real-format corpus stand-ins (tests/standins/corpora.py) and the importers on them: what
`samu-st prepare covost2` and `prepare commonvoice --train-from-validated` make of a Common
Voice 8 release holding only validated.tsv and the CoVoST-2 released TSVs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import soundfile as sf

from samu_st.data.manifest import read_manifest
from samu_st.data.tsv import tsv_columns
from standins.corpora import (
    COVOST_READ_COLUMNS,
    COVOST_RELEASE_COLUMNS,
    CV8_COLUMNS,
    EXTRA_VALIDATED,
    PAPER_LANGUAGES,
    SPLIT_SIZES,
    import_paper_corpora,
    write_paper_corpora,
)

N_VALIDATED = sum(SPLIT_SIZES.values()) + EXTRA_VALIDATED


def test_layout_is_the_releases(tmp_path: Path) -> None:
    corpora = write_paper_corpora(tmp_path, languages=("ca", "ja"))
    assert corpora.cv_root.name == "cv-corpus-8.0-2022-01-19"
    for lang in ("ca", "ja"):
        lang_dir = corpora.cv_lang_dir(lang)
        assert sorted(p.name for p in lang_dir.iterdir()) == ["clips", "validated.tsv"]
        assert tuple(tsv_columns(lang_dir / "validated.tsv")) == CV8_COLUMNS
        assert tuple(tsv_columns(corpora.covost_tsv(lang))) == COVOST_RELEASE_COLUMNS
        clips = sorted((lang_dir / "clips").iterdir())
        assert len(clips) == N_VALIDATED and all(c.suffix == ".mp3" for c in clips)
        info = sf.info(clips[0])
        assert (info.samplerate, info.channels, info.format) == (48_000, 1, "MP3")
        assert all(0.3 <= c.seconds <= 1.0 for c in corpora.clips[lang])
        assert {c.split for c in corpora.clips[lang]} == {
            "train",
            "train_covost",
            "dev",
            "test",
            "",
        }
    assert len(corpora.clips["ja"][0].client_id) == 128  # a sha512 hex digest, as in CV


@pytest.mark.parametrize("columns", [COVOST_RELEASE_COLUMNS, COVOST_READ_COLUMNS])
def test_importers_on_the_standins(tmp_path: Path, columns: tuple[str, ...]) -> None:
    corpora = write_paper_corpora(tmp_path / "release", covost_columns=columns)
    made = import_paper_corpora(corpora, tmp_path / "manifests")
    assert made.covost_report.skipped == {} and made.covost_report.excluded == {}
    for lang in PAPER_LANGUAGES:
        by_path = {c.path: c for c in corpora.clips[lang]}
        for split, n in SPLIT_SIZES.items():
            utts = read_manifest(made.covost / split / f"{lang}.jsonl")
            assert len(utts) == n
            assert {f"{u.id}.mp3" for u in utts} == {
                c.path for c in corpora.covost_split(lang, split)
            }
            for u in utts:
                clip = by_path[Path(u.audio).name]
                assert (u.language, u.split) == (lang, split)
                assert (u.source_text, u.target_text) == (clip.sentence, clip.translation)
                assert u.speaker == clip.client_id  # only validated.tsv has client_id
                assert u.duration == pytest.approx(clip.seconds, abs=0.01)
        # Step 2's data: the whole of validated.tsv, train only, labelled by its locale.
        cv = read_manifest(made.cv / "train" / f"{lang}.jsonl")
        assert [(u.id + ".mp3", u.source_text) for u in cv] == [
            (c.path, c.sentence) for c in corpora.clips[lang]
        ]
        assert {u.language for u in cv} == {lang} and {u.target_text for u in cv} == {""}
        assert made.cv_reports[lang].kept == {"train": {lang: N_VALIDATED}}
    assert not (made.cv / "dev").exists() and not (made.cv / "test").exists()
    report = json.loads((made.cv / "import_report.json").read_text())
    assert sorted(report["imports"]) == sorted(PAPER_LANGUAGES)  # every language's report kept
    assert report["total_kept"] == N_VALIDATED * len(PAPER_LANGUAGES)
    assert '"' in corpora.clips["de"][-1].sentence  # raw quotes survive (QUOTE_NONE)
