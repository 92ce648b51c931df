import json
from pathlib import Path
from typing import Any

import pytest

from fixtures_corpora import (
    CvFolder,
    clip_seconds,
    corrupt,
    make_commonvoice,
    truncate,
    write_mp3,
)
from samu_st.cli import main
from samu_st.data.importers import ImportOptions, import_commonvoice
from samu_st.data.manifest import read_manifest
from samu_st.errors import DataError

QUIET = ImportOptions(progress=False, workers=2)


def run(folder: CvFolder, out: Path, **options: Any) -> dict[str, Any]:
    opts = ImportOptions(**{"progress": False, "workers": 2, **options})
    import_commonvoice(folder.lang_dir, out, options=opts)
    return json.loads((out / "import_report.json").read_text())


def test_kept_counts_manifests_and_report(tmp_path: Path) -> None:
    folder = make_commonvoice(tmp_path / "cv")
    out = tmp_path / "out"
    report = import_commonvoice(folder.lang_dir, out, options=QUIET)
    assert report.kept == {"dev": {"ga-IE": 2}, "test": {"ga-IE": 2}, "train": {"ga-IE": 3}}
    assert report.skipped == {}
    train = read_manifest(out / "train" / "ga-IE.jsonl")
    assert [u.id for u in train] == [f"common_voice_ga-IE_{i}" for i in (1000, 1001, 1002)]
    first = train[0]
    assert Path(first.audio).is_absolute() and Path(first.audio).is_file()
    assert (first.language, first.split, first.target_text) == ("ga-IE", "train", "")
    assert (first.source_text, first.speaker) == ("train sentence 0", "train-spk0")
    assert [u.duration for u in train] == pytest.approx(
        [clip_seconds(i) for i in range(3)], abs=1e-3
    )
    data = json.loads((out / "import_report.json").read_text())
    assert data["total_kept"] == 7 and data["total_skipped"] == 0
    assert data["hours"]["train"]["ga-IE"] == pytest.approx(
        sum(map(clip_seconds, range(3))) / 3600, abs=1e-6
    )
    assert data["options"]["max_duration"] == 30.0


def test_train_from_validated_leaves_out_dev_test_overlap(tmp_path: Path) -> None:
    folder = make_commonvoice(tmp_path / "cv")
    out = tmp_path / "out"
    report = import_commonvoice(folder.lang_dir, out, train_from_validated=True, options=QUIET)
    train = read_manifest(out / "train" / "ga-IE.jsonl")
    # validated = 3 train + 2 dev + 2 test + 3 extra; dev/test rows, the dev speaker's extra row
    # and the extra row saying a test sentence are left out.
    assert [u.source_text for u in train] == [f"train sentence {i}" for i in range(3)] + [
        "new sentence"
    ]
    assert report.excluded == {"dev_test_overlap": 6}
    assert report.skipped == {}


BAD_AUDIO = {
    "corrupt": (lambda p: corrupt(p), "corrupt_audio"),
    "truncated_to_200_bytes": (lambda p: truncate(p, 200), "corrupt_audio"),
    "missing": (lambda p: p.unlink(), "missing_audio"),
    "empty": (lambda p: p.write_bytes(b""), "empty_audio"),
}


@pytest.mark.parametrize("case", sorted(BAD_AUDIO))
def test_bad_audio_is_skipped_and_counted(tmp_path: Path, case: str) -> None:
    damage, reason = BAD_AUDIO[case]
    folder = make_commonvoice(tmp_path / "cv")
    damage(folder.clip("train", 1))
    data = run(folder, tmp_path / "out")
    assert data["kept"]["train"] == {"ga-IE": 2}
    assert data["skipped"] == {reason: 1}
    assert data["examples"][reason][0].startswith(f"{folder.tsv('train')}:3: ")
    with pytest.raises(DataError) as err:
        run(folder, tmp_path / "strict", strict=True)
    assert str(err.value).startswith(f"{folder.tsv('train')}:3: ")
    assert reason in str(err.value)


def test_half_truncated_mp3_needs_check_audio(tmp_path: Path) -> None:
    folder = make_commonvoice(tmp_path / "cv")
    truncate(folder.clip("train", 2), 0.5)  # header intact: only decoding notices
    assert run(folder, tmp_path / "a")["skipped"] == {}
    data = run(folder, tmp_path / "b", check_audio=True)
    assert data["skipped"] == {"corrupt_audio": 1}
    assert "truncated" in data["examples"]["corrupt_audio"][0]


@pytest.mark.parametrize(("rate", "channels"), [(8_000, 1), (48_000, 1), (48_000, 2), (16_000, 2)])
def test_other_rates_and_stereo_are_kept_with_right_duration(
    tmp_path: Path, rate: int, channels: int
) -> None:
    folder = make_commonvoice(tmp_path / "cv")
    write_mp3(folder.clip("dev", 0), seconds=0.8, sample_rate=rate, channels=channels)
    run(folder, tmp_path / "out", check_audio=True)
    dev = read_manifest(tmp_path / "out" / "dev" / "ga-IE.jsonl")
    assert len(dev) == 2
    assert dev[0].duration == pytest.approx(0.8, abs=1e-3)


def test_silence_is_skipped_only_with_check_audio(tmp_path: Path) -> None:
    folder = make_commonvoice(tmp_path / "cv")
    write_mp3(folder.clip("test", 1), seconds=0.5, silent=True)
    assert run(folder, tmp_path / "a")["kept"]["test"] == {"ga-IE": 2}
    data = run(folder, tmp_path / "b", check_audio=True)
    assert data["kept"]["test"] == {"ga-IE": 1}
    assert data["skipped"] == {"silent_audio": 1}
    assert data["examples"]["silent_audio"][0].startswith(f"{folder.tsv('test')}:3: ")


def test_too_long_audio_and_text_and_empty_transcript(tmp_path: Path) -> None:
    folder = make_commonvoice(tmp_path / "cv")
    folder.rows["train"][0]["sentence"] = ""
    folder.rows["train"][1]["sentence"] = "x" * 2001
    folder.write_tsvs()
    write_mp3(folder.clip("train", 2), seconds=1.0)
    data = run(folder, tmp_path / "out", max_duration=0.9)
    assert data["skipped"] == {"empty_transcript": 1, "text_too_long": 1, "audio_too_long": 1}
    assert "train" not in data["kept"]
    assert not (tmp_path / "out" / "train").exists()
    assert data["examples"]["empty_transcript"][0].startswith(f"{folder.tsv('train')}:2: ")


def test_extra_tab_row_is_skipped_or_strict_error(tmp_path: Path) -> None:
    folder = make_commonvoice(tmp_path / "cv")
    tsv = folder.tsv("dev")
    lines = tsv.read_text().splitlines()
    lines[2] += "\tstray"
    tsv.write_text("\n".join(lines) + "\n")
    data = run(folder, tmp_path / "out")
    assert data["kept"]["dev"] == {"ga-IE": 1}
    assert data["skipped"] == {"malformed_row": 1}
    assert data["examples"]["malformed_row"][0].startswith(f"{tsv}:3: expected 10 tab-separated")
    with pytest.raises(DataError, match=r"dev\.tsv:3: expected 10 tab-separated fields, found 11"):
        run(folder, tmp_path / "strict", strict=True)


def test_not_utf8_tsv_is_an_error_naming_file_and_line(tmp_path: Path) -> None:
    folder = make_commonvoice(tmp_path / "cv")
    tsv = folder.tsv("train")
    tsv.write_bytes(tsv.read_bytes().replace(b"train sentence 1", "phrase é".encode("latin-1")))
    with pytest.raises(DataError) as err:
        run(folder, tmp_path / "out")
    assert str(err.value).startswith(f"{tsv}:3: not UTF-8")


def test_missing_columns_is_an_error(tmp_path: Path) -> None:
    folder = make_commonvoice(tmp_path / "cv")
    folder.tsv("test").write_text("client_id\tpath\nc\tcommon_voice_ga-IE_1005.mp3\n")
    with pytest.raises(DataError, match=r"test\.tsv:1: missing required column\(s\) sentence"):
        run(folder, tmp_path / "out")


def test_bad_language_code_is_an_error(tmp_path: Path) -> None:
    folder = make_commonvoice(tmp_path / "cv", lang="Irish_gaelic")
    with pytest.raises(DataError, match="unknown language code 'Irish_gaelic'"):
        run(folder, tmp_path / "out")
    report = import_commonvoice(folder.lang_dir, tmp_path / "ok", language="ga", options=QUIET)
    assert report.kept["train"] == {"ga": 3}


def test_cli_prepare_commonvoice(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = make_commonvoice(tmp_path / "cv")
    folder.clip("train", 0).unlink()
    out = tmp_path / "out"
    assert main(["prepare", "commonvoice", str(folder.lang_dir), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "kept 6 utterances" in printed and "missing_audio 1" in printed
    for split, n in (("train", 2), ("dev", 2), ("test", 2)):
        assert len(read_manifest(out / split / "ga-IE.jsonl")) == n
    assert json.loads((out / "import_report.json").read_text())["skipped"] == {"missing_audio": 1}
    code = main(["prepare", "commonvoice", str(folder.lang_dir), "--out", str(out), "--strict"])
    assert code == 2
    assert "train.tsv:2: audio file not found" in capsys.readouterr().err


# --- issue 14, defect 11 ---------------------------------------------------------------------


def validated_only(root: Path, lang: str = "cy") -> CvFolder:
    """A Common Voice folder as CoVoST-2 points into it: validated.tsv and clips/ only."""
    folder = make_commonvoice(root, lang)
    for name in ("train", "dev", "test", "other", "invalidated"):
        folder.tsv(name).unlink()
    return folder


def test_validated_only_folder_goes_to_train_whole(tmp_path: Path) -> None:
    folder = validated_only(tmp_path / "cv")
    out = tmp_path / "out"
    report = import_commonvoice(folder.lang_dir, out, train_from_validated=True, options=QUIET)
    assert report.kept == {"train": {"cy": 10}}  # 3 + 2 + 2 + 3 extra rows, nothing held out
    assert report.excluded == {} and report.skipped == {}
    assert sorted(u.id for u in read_manifest(out / "train" / "cy.jsonl")) == sorted(
        Path(r["path"]).stem for r in folder.rows["validated"]
    )
    assert not (out / "dev").exists() and not (out / "test").exists()
    assert json.loads((out / "import_report.json").read_text())["notes"] == [
        f"{folder.lang_dir}: no dev.tsv and test.tsv, so no dev/test split;"
        " all of validated.tsv is train"
    ]
    # Without the option, the missing train.tsv is an error that says what to do.
    with pytest.raises(DataError, match=r"train\.tsv: TSV file not found.*--train-from-valid"):
        import_commonvoice(folder.lang_dir, tmp_path / "no", options=QUIET)


def test_absent_test_tsv_is_left_out_and_noted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = make_commonvoice(tmp_path / "cv")
    folder.tsv("test").unlink()
    out = tmp_path / "out"
    args = ["prepare", "commonvoice", str(folder.lang_dir), "--out", str(out)]
    assert main([*args, "--train-from-validated"]) == 0
    assert (
        "Note: " + f"{folder.lang_dir}: no test.tsv, so no test split." in capsys.readouterr().out
    )
    report = json.loads((out / "import_report.json").read_text())
    # Only dev is held out now: its 2 rows and the dev speaker's extra row leave train.
    assert report["kept"] == {"train": {"ga-IE": 7}, "dev": {"ga-IE": 2}}
    assert report["excluded"] == {"dev_test_overlap": 3}


def test_several_languages_into_one_out_keep_every_report(tmp_path: Path) -> None:
    out = tmp_path / "out"
    fr, de = make_commonvoice(tmp_path / "cv", "fr"), make_commonvoice(tmp_path / "cv", "de")
    import_commonvoice(fr.lang_dir, out, options=QUIET)
    import_commonvoice(de.lang_dir, out, options=QUIET)
    data = json.loads((out / "import_report.json").read_text())
    assert data["kept"]["train"] == {"de": 3, "fr": 3}
    assert sorted(data["imports"]) == ["de", "fr"] and data["total_kept"] == 14
    assert data["imports"]["fr"]["kept"]["dev"] == {"fr": 2}
    # Re-importing fr replaces fr's entry only; de's stays as it was.
    write_mp3(fr.clip("train", 0), seconds=1.0)
    import_commonvoice(fr.lang_dir, out, options=ImportOptions(progress=False, max_duration=0.9))
    data = json.loads((out / "import_report.json").read_text())
    assert data["kept"]["train"] == {"de": 3, "fr": 2}
    assert data["skipped"] == {"audio_too_long": 1}
    assert data["imports"]["de"]["skipped"] == {} and data["imports"]["de"]["total_kept"] == 7
    assert sorted(Path(m).name for m in data["manifests"]) == ["de.jsonl"] * 3 + ["fr.jsonl"] * 3


def test_language_comes_from_the_locale_column(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = make_commonvoice(tmp_path / "cv", "fr")
    renamed = folder.lang_dir.rename(tmp_path / "cv" / "cv")  # a folder named after the corpus
    out = tmp_path / "out"
    with caplog.at_level("WARNING", logger="samu_st.data.importers.commonvoice"):
        report = import_commonvoice(renamed, out, options=QUIET)
    assert report.kept == {"train": {"fr": 3}, "dev": {"fr": 2}, "test": {"fr": 2}}
    assert {u.language for u in read_manifest(out / "train" / "fr.jsonl")} == {"fr"}
    assert not (out / "train" / "cv.jsonl").exists()
    assert "locale 'fr', folder 'cv'" in caplog.text
    assert any("have locale 'fr', not 'cv'" in n for n in report.notes)
    # --language still labels every row as asked.
    forced = import_commonvoice(renamed, tmp_path / "forced", language="br", options=QUIET)
    assert forced.kept["train"] == {"br": 3}


def test_a_tsv_mixing_locales_is_labelled_per_row(tmp_path: Path) -> None:
    folder = make_commonvoice(tmp_path / "cv", "fr")
    folder.rows["train"][1]["locale"] = "br"  # a clip of another language
    folder.rows["train"][2]["locale"] = ""  # no locale: the folder name
    folder.write_tsvs()
    out = tmp_path / "out"
    report = import_commonvoice(folder.lang_dir, out, options=QUIET)
    assert report.kept["train"] == {"fr": 2, "br": 1}
    assert [u.id for u in read_manifest(out / "train" / "br.jsonl")] == [
        Path(folder.rows["train"][1]["path"]).stem
    ]
    folder.rows["dev"][0]["locale"] = "French (France)"
    folder.write_tsvs()
    with pytest.raises(DataError, match=r"dev\.tsv:2: unknown language code 'French \(France\)'"):
        import_commonvoice(folder.lang_dir, tmp_path / "bad", options=QUIET)


def test_an_older_or_unreadable_report_is_not_lost(tmp_path: Path) -> None:
    fr, de = make_commonvoice(tmp_path / "cv", "fr"), make_commonvoice(tmp_path / "cv", "de")
    out = tmp_path / "out"
    import_commonvoice(fr.lang_dir, out, options=QUIET)
    path = out / "import_report.json"
    legacy = json.loads(path.read_text())["imports"]["fr"]  # the one-import file of before
    path.write_text(json.dumps(legacy))
    import_commonvoice(de.lang_dir, out, options=QUIET)
    assert sorted(json.loads(path.read_text())["imports"]) == ["de", "fr"]
    path.write_text("{ half-written")
    import_commonvoice(de.lang_dir, out, options=QUIET)
    assert (out / "import_report.unreadable.json").read_text() == "{ half-written"
    assert sorted(json.loads(path.read_text())["imports"]) == ["de"]
