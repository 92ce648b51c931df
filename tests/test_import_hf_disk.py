import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from datasets import Audio, Dataset, DatasetDict

from fixtures_corpora import clip_seconds, tone, write_mp3
from samu_st.cli import main
from samu_st.data.importers import ImportOptions, import_hf_disk
from samu_st.data.manifest import read_manifest
from samu_st.errors import DataError

QUIET = ImportOptions(progress=False, workers=2)
SPLITS = {"train": 3, "validation": 2, "test": 1}


def clips(root: Path, n: int, prefix: str) -> list[Path]:
    return [write_mp3(root / f"{prefix}_{i}.mp3", clip_seconds(i)) for i in range(n)]


def save_path_variant(root: Path) -> Path:
    """DatasetDict with a ``path`` column of absolute mp3 paths (as the notebook's CV copy)."""
    splits = {}
    for name, n in SPLITS.items():
        paths = clips(root / "clips", n, f"common_voice_ga-IE_{name}")
        splits[name] = Dataset.from_dict(
            {
                "path": [str(p) for p in paths],
                "sentence": [f"{name} {i}" for i in range(n)],
                "client_id": [f"spk{i}" for i in range(n)],
            }
        )
    ds_dir = root / "ds"
    DatasetDict(splits).save_to_disk(str(ds_dir))
    return ds_dir


def save_bytes_variant(root: Path, corrupt_row: int | None = None) -> Path:
    """DatasetDict whose ``audio`` column (datasets.Audio) embeds the mp3 bytes."""
    splits = {}
    for name, n in SPLITS.items():
        paths = clips(root / "tmp", n, name)
        audio = [{"bytes": p.read_bytes(), "path": p.name} for p in paths]
        if name == "train" and corrupt_row is not None:
            audio[corrupt_row]["bytes"] = np.random.default_rng(0).bytes(2000)
        ds = Dataset.from_dict({"audio": audio, "sentence": [f"{name} {i}" for i in range(n)]})
        splits[name] = ds.cast_column("audio", Audio(decode=False))
        for p in paths:
            p.unlink()  # the bytes are the only copy
    ds_dir = root / "ds"
    DatasetDict(splits).save_to_disk(str(ds_dir))
    return ds_dir


def test_path_column_dataset_dict(tmp_path: Path) -> None:
    ds_dir = save_path_variant(tmp_path)
    out = tmp_path / "out"
    report = import_hf_disk(ds_dir, out, "ga-IE", options=QUIET)
    assert report.kept == {"dev": {"ga-IE": 2}, "test": {"ga-IE": 1}, "train": {"ga-IE": 3}}
    dev = read_manifest(out / "dev" / "ga-IE.jsonl")  # validation → dev
    assert [u.id for u in dev] == [
        "common_voice_ga-IE_validation_0",
        "common_voice_ga-IE_validation_1",
    ]
    assert (dev[1].source_text, dev[1].speaker, dev[1].split) == ("validation 1", "spk1", "dev")
    assert dev[1].duration == pytest.approx(clip_seconds(1), abs=1e-3)
    assert not (out / "audio").exists()  # files on disk are used in place


def test_embedded_bytes_are_written_as_flac(tmp_path: Path) -> None:
    ds_dir = save_bytes_variant(tmp_path, corrupt_row=1)
    out = tmp_path / "out"
    report = import_hf_disk(ds_dir, out, "ga-IE", options=QUIET)
    assert report.kept == {"dev": {"ga-IE": 2}, "test": {"ga-IE": 1}, "train": {"ga-IE": 2}}
    assert report.skipped == {"corrupt_audio": 1}
    assert report.examples["corrupt_audio"][0].startswith(f"{ds_dir / 'train'}:2: ")
    train = read_manifest(out / "train" / "ga-IE.jsonl")
    assert [u.id for u in train] == ["train_0", "train_2"]
    flac = Path(train[1].audio)
    assert flac == (out / "audio" / "train" / "train_2.flac").absolute()
    info = sf.info(flac)
    assert (info.format, info.samplerate, info.channels) == ("FLAC", 48_000, 1)
    assert train[1].duration == pytest.approx(clip_seconds(2), abs=1e-3)
    wav, _ = sf.read(flac, dtype="float32")
    assert np.sqrt(np.mean(wav**2)) == pytest.approx(0.3 / np.sqrt(2), rel=0.05)  # the sine


def test_single_dataset_with_array_struct(tmp_path: Path) -> None:
    audio = [
        {"array": tone(0.5, 16_000).tolist(), "sampling_rate": 16_000},
        {"array": tone(0.25, 8_000).tolist(), "sampling_rate": 8_000},
        {"array": [], "sampling_rate": 16_000},
    ]
    ds = Dataset.from_dict({"audio": audio, "text": ["a", "b", "c"], "en": ["x", "", "z"]})
    ds.save_to_disk(str(tmp_path / "ds"))
    out = tmp_path / "out"
    report = import_hf_disk(
        tmp_path / "ds", out, "fr", text_column="text", target_column="en", options=QUIET
    )
    assert report.kept == {"train": {"fr": 1}}
    assert report.skipped == {"empty_translation": 1, "corrupt_audio": 1}
    (utt,) = read_manifest(out / "train" / "fr.jsonl")
    assert (utt.id, utt.target_text, utt.speaker) == ("train-0000001", "x", "")
    assert utt.duration == pytest.approx(0.5, abs=1e-4)


def test_errors_missing_columns_bad_language_not_a_dataset(tmp_path: Path) -> None:
    ds_dir = save_path_variant(tmp_path)
    with pytest.raises(DataError, match=r"train: missing column\(s\) transcript; columns found"):
        import_hf_disk(ds_dir, tmp_path / "o", "ga-IE", text_column="transcript", options=QUIET)
    with pytest.raises(DataError, match="unknown language code 'irish'"):
        import_hf_disk(ds_dir, tmp_path / "o", "irish", options=QUIET)
    (tmp_path / "plain").mkdir()
    with pytest.raises(DataError, match="not a dataset saved with save_to_disk"):
        import_hf_disk(tmp_path / "plain", tmp_path / "o", "ga-IE", options=QUIET)


def test_other_splits_and_missing_files(tmp_path: Path) -> None:
    ds_dir = tmp_path / "ds"
    paths = clips(tmp_path / "clips", 2, "c")
    good = Dataset.from_dict(
        {"path": [str(paths[0]), str(tmp_path / "gone.mp3")], "sentence": ["a", "b"]}
    )
    DatasetDict({"train": good, "other": good}).save_to_disk(str(ds_dir))
    report = import_hf_disk(ds_dir, tmp_path / "out", "ga-IE", options=QUIET)
    assert report.kept == {"train": {"ga-IE": 1}}
    assert report.skipped == {"missing_audio": 1}
    assert report.excluded == {"other_split": 2}
    strict = ImportOptions(progress=False, strict=True)
    with pytest.raises(DataError, match=rf"^{ds_dir / 'train'}:2: audio file not found"):
        import_hf_disk(ds_dir, tmp_path / "strict", "ga-IE", options=strict)


def test_cli_prepare_hf_disk(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ds_dir = save_bytes_variant(tmp_path)
    out = tmp_path / "out"
    code = main(["prepare", "hf-disk", str(ds_dir), "--out", str(out), "--language", "ga-IE"])
    assert code == 0
    assert "kept 6 utterances" in capsys.readouterr().out
    for split, n in (("train", 3), ("dev", 2), ("test", 1)):
        utts = read_manifest(out / split / "ga-IE.jsonl")
        assert len(utts) == n and all(Path(u.audio).is_file() for u in utts)
    assert json.loads((out / "import_report.json").read_text())["total_kept"] == 6
    code = main(["prepare", "hf-disk", str(ds_dir), "--out", str(out), "--language", "xx_1"])
    assert code == 2
    assert "unknown language code 'xx_1'" in capsys.readouterr().err
