import json
from pathlib import Path

import pytest

from fixtures_corpora import (
    CV_COLUMNS,
    clip_seconds,
    corrupt,
    make_covost,
    write_covost_tsvs,
    write_raw_tsv,
)
from samu_st.cli import main
from samu_st.data.importers import ImportOptions, import_covost2
from samu_st.data.manifest import read_manifest
from samu_st.errors import DataError
from standins.corpora import COVOST_READ_COLUMNS, write_paper_corpora

QUIET = ImportOptions(progress=False, workers=2)
# n=6 rows per language, split cycle train, train_covost, dev, test → train 4, dev 1, test 1.
EXPECTED = {"train": 4, "dev": 1, "test": 1}


@pytest.mark.parametrize("form", ["released", "full", "per_split", "tar"])
def test_every_accepted_form_gives_the_same_manifests(tmp_path: Path, form: str) -> None:
    fx = make_covost(tmp_path / "in", form=form)
    if form == "full":  # no join needed: validated.tsv is not read
        for lang in ("fr", "de"):
            (fx.cv_root / lang / "validated.tsv").unlink()
    out = tmp_path / "out"
    report = import_covost2(fx.covost_dir, fx.cv_root, out, options=QUIET)
    assert report.kept == {s: {"de": n, "fr": n} for s, n in EXPECTED.items()}
    assert report.skipped == {} and report.excluded == {}
    train = read_manifest(out / "train" / "fr.jsonl")
    # train_covost rows (1, 5) are train; order follows the TSV
    assert [u.id for u in train] == [f"common_voice_fr_{2000 + i}" for i in (0, 1, 4, 5)]
    u = train[1]
    assert (u.source_text, u.target_text, u.speaker) == (
        "fr phrase 1",
        "english phrase 1",
        "fr-spk1",
    )
    assert (u.language, u.split) == ("fr", "train")
    assert u.duration == pytest.approx(clip_seconds(1), abs=1e-3)
    assert Path(u.audio) == (fx.clip("fr", 1)).absolute()
    dev = read_manifest(out / "dev" / "de.jsonl")
    assert [x.id for x in dev] == ["common_voice_de_2002"]


def test_join_takes_sentence_and_speaker_from_validated(tmp_path: Path) -> None:
    fx = make_covost(tmp_path / "in", langs=("sv-SE",))
    rows = fx.rows["sv-SE"]
    validated = fx.cv_root / "sv-SE" / "validated.tsv"
    # validated.tsv rows in another order, one clip missing, a different sentence for clip 0
    cv = [
        ["spk-x", r["path"], "från validated" if i == 0 else r["sentence"]] + [""] * 7
        for i, r in reversed(list(enumerate(rows)))
        if i != 3
    ]
    write_raw_tsv(validated, CV_COLUMNS, cv)
    out = tmp_path / "out"
    report = import_covost2(fx.covost_dir, fx.cv_root, out, options=QUIET)
    train = read_manifest(out / "train" / "sv-SE.jsonl")
    assert (train[0].source_text, train[0].speaker) == ("från validated", "spk-x")
    assert report.kept == {"train": {"sv-SE": 4}, "dev": {"sv-SE": 1}}
    assert report.skipped == {"not_in_validated": 1}
    assert report.examples["not_in_validated"][0].startswith(f"{fx.tsv('sv-SE')}:5: ")


def test_missing_validated_for_a_join_is_a_clear_error(tmp_path: Path) -> None:
    fx = make_covost(tmp_path / "in", langs=("fr",))
    (fx.cv_root / "fr" / "validated.tsv").unlink()
    with pytest.raises(DataError, match=r"has no column\(s\) sentence, client_id.*validated\.tsv"):
        import_covost2(fx.covost_dir, fx.cv_root, tmp_path / "out", options=QUIET)


def test_languages_filter_and_single_clips_folder(tmp_path: Path) -> None:
    fx = make_covost(tmp_path / "in", langs=("fr", "zh-CN"))
    clips = fx.cv_root / "zh-CN" / "clips"  # one clips folder; validated.tsv is its parent's
    report = import_covost2(fx.covost_dir, clips, tmp_path / "out", ["zh-CN"], options=QUIET)
    assert report.kept == {s: {"zh-CN": n} for s, n in EXPECTED.items()}
    with pytest.raises(DataError, match="unknown CoVoST-2 source language"):
        import_covost2(fx.covost_dir, fx.cv_root, tmp_path / "o2", ["xx"], options=QUIET)
    with pytest.raises(DataError, match=r"no covost_v2\.<src>_en TSV for ja"):
        import_covost2(fx.covost_dir, fx.cv_root, tmp_path / "o3", ["ja"], options=QUIET)


def test_unknown_language_in_file_name_is_counted_or_strict_error(tmp_path: Path) -> None:
    fx = make_covost(tmp_path / "in", langs=("fr",))
    bogus = fx.covost_dir / "covost_v2.klingon_en.tsv"
    bogus.write_bytes(fx.tsv("fr").read_bytes())
    report = import_covost2(fx.covost_dir, fx.cv_root, tmp_path / "out", options=QUIET)
    assert report.skipped == {"unknown_language": 1}
    assert report.kept["train"] == {"fr": 4}
    with pytest.raises(DataError, match=r"klingon_en\.tsv: unknown CoVoST-2 source language"):
        strict = ImportOptions(progress=False, strict=True)
        import_covost2(fx.covost_dir, fx.cv_root, tmp_path / "strict", options=strict)
    fx.tsv("fr").unlink()
    with pytest.raises(DataError, match="no utterance could be imported"):
        import_covost2(fx.covost_dir, fx.cv_root, tmp_path / "o2", options=QUIET)


def test_no_covost_file_at_all_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no CoVoST-2 X→EN TSV found"):
        import_covost2(tmp_path / "empty", tmp_path, tmp_path / "out", options=QUIET)


def test_bad_rows_other_split_and_strict(tmp_path: Path) -> None:
    fx = make_covost(tmp_path / "in", langs=("fr",))
    rows = fx.rows["fr"]
    rows[0]["translation"] = ""
    rows[3]["split"] = "excluded"
    write_covost_tsvs(fx, "fr", "released")
    corrupt(fx.clip("fr", 4))
    report = import_covost2(fx.covost_dir, fx.cv_root, tmp_path / "out", options=QUIET)
    assert report.kept == {"train": {"fr": 2}, "dev": {"fr": 1}}
    assert report.skipped == {"empty_translation": 1, "corrupt_audio": 1}
    assert report.excluded == {"other_split": 1}
    tsv = fx.tsv("fr")
    assert report.examples["corrupt_audio"][0].startswith(f"{tsv}:6: ")
    strict = ImportOptions(progress=False, strict=True)
    with pytest.raises(DataError, match=rf"^{tsv}:2: empty translation"):
        import_covost2(fx.covost_dir, fx.cv_root, tmp_path / "strict", options=strict)


def test_missing_columns_in_covost_tsv(tmp_path: Path) -> None:
    fx = make_covost(tmp_path / "in", langs=("fr",))
    write_raw_tsv(fx.tsv("fr"), ("path", "split"), [["a.mp3", "train"]])
    with pytest.raises(DataError, match=r"fr_en\.tsv:1: missing required column\(s\) translation"):
        import_covost2(fx.covost_dir, fx.cv_root, tmp_path / "out", options=QUIET)


def test_cli_prepare_covost2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fx = make_covost(tmp_path / "in", langs=("fr", "de"))
    out = tmp_path / "out"
    args = ["prepare", "covost2", str(fx.covost_dir), str(fx.cv_root), "--out", str(out)]
    assert main([*args, "--languages", "de", "--workers", "2", "--check-audio"]) == 0
    assert "kept 6 utterances in 1 language(s) [de]" in capsys.readouterr().out
    for split, n in EXPECTED.items():
        assert len(read_manifest(out / split / "de.jsonl")) == n
    data = json.loads((out / "import_report.json").read_text())
    assert data["kept"]["train"] == {"de": 4} and data["options"]["check_audio"] is True
    assert main([*args, "--max-duration", "0.35"]) == 0  # clips of 0.30-0.55 s
    data = json.loads((out / "import_report.json").read_text())
    assert data["skipped"] == {"audio_too_long": 8}  # clips 2-5 of each language
    assert data["kept"] == {"train": {"de": 2, "fr": 2}}
    assert not (out / "dev" / "de.jsonl").exists()  # the first run's manifest went stale
    assert main([*args, "--max-duration", "0.35", "--strict"]) == 2
    assert "fr_en.tsv:4: " in capsys.readouterr().err  # fr comes first (CoVoST order)


def test_released_archive_joins_a_validated_only_common_voice_release(tmp_path: Path) -> None:
    """covost_v2.<src>_en.tsv.tar.gz (path translation split) + cv-corpus-8.0/<src>/ holding
    only validated.tsv and clips/: sentence and client_id come from validated.tsv by path."""
    corpora = write_paper_corpora(
        tmp_path / "in", languages=("ca", "cy"), covost_columns=COVOST_READ_COLUMNS, archive=True
    )
    assert not corpora.covost_tsv("ca").exists()  # only the released archive is there
    out = tmp_path / "out"
    report = import_covost2(corpora.covost_tsv_dir, corpora.cv_root, out, options=QUIET)
    assert report.kept == {
        s: {"ca": n, "cy": n} for s, n in {"train": 6, "dev": 2, "test": 2}.items()
    }
    assert report.skipped == {} and report.excluded == {}
    for lang in ("ca", "cy"):
        by_path = {c.path: c for c in corpora.clips[lang]}
        for u in read_manifest(out / "train" / f"{lang}.jsonl"):
            clip = by_path[Path(u.audio).name]
            assert (u.source_text, u.speaker, u.target_text) == (
                clip.sentence,
                clip.client_id,
                clip.translation,
            )
