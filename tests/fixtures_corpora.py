"""Test factories: Common Voice, CoVoST-2 and ``save_to_disk`` folders with the real file names and
columns, and short mp3 clips written by soundfile (48 kHz mono, like Common Voice).

TSVs are written the way Common Voice writes them: tab-joined, UTF-8, no quoting.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

CV_RATE = 48_000
# Columns of a Common Voice (>= 7.0) validated/train/dev/test.tsv.
CV_COLUMNS = (
    "client_id",
    "path",
    "sentence",
    "up_votes",
    "down_votes",
    "age",
    "gender",
    "accents",
    "locale",
    "segment",
)


def tone(seconds: float, sample_rate: int = CV_RATE, freq: float = 220.0) -> np.ndarray:
    """A 0.3-amplitude sine, float32 (S,)."""
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write_mp3(
    path: Path,
    seconds: float = 0.5,
    sample_rate: int = CV_RATE,
    channels: int = 1,
    silent: bool = False,
) -> Path:
    """An mp3 clip (soundfile / libsndfile's LAME encoder)."""
    x = np.zeros(round(seconds * sample_rate), np.float32) if silent else tone(seconds, sample_rate)
    data = np.stack([x] * channels, axis=1) if channels > 1 else x
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, data, sample_rate, format="MP3", subtype="MPEG_LAYER_III")
    return path


def corrupt(path: Path, n: int = 3000, seed: int = 0) -> None:
    """Replace a file with random bytes."""
    path.write_bytes(np.random.default_rng(seed).bytes(n))


def truncate(path: Path, keep: float | int) -> None:
    """Keep the first ``keep`` bytes (an int) or fraction (a float) of a file."""
    data = path.read_bytes()
    path.write_bytes(data[: keep if isinstance(keep, int) else int(len(data) * keep)])


def write_raw_tsv(path: Path, columns: Sequence[str], rows: Iterable[Sequence[str]]) -> Path:
    """Tab-joined lines, as Common Voice writes its TSVs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["\t".join(columns)] + ["\t".join(r) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def cv_row(lang: str, clip: str, sentence: str, speaker: str) -> dict[str, str]:
    return {
        "client_id": speaker,
        "path": clip,
        "sentence": sentence,
        "up_votes": "2",
        "down_votes": "0",
        "age": "",
        "gender": "",
        "accents": "",
        "locale": lang,
        "segment": "",
    }


def clip_seconds(i: int) -> float:
    """Clip i lasts 0.3-0.65 s, so durations differ."""
    return 0.3 + 0.05 * (i % 8)


@dataclass
class CvFolder:
    """A Common Voice language folder ``<root>/<lang>/`` with clips and TSVs."""

    lang_dir: Path
    lang: str
    rows: dict[str, list[dict[str, str]]] = field(default_factory=dict)  # tsv stem -> rows

    @property
    def clips(self) -> Path:
        return self.lang_dir / "clips"

    def tsv(self, name: str) -> Path:
        return self.lang_dir / f"{name}.tsv"

    def clip(self, split: str, i: int) -> Path:
        return self.clips / self.rows[split][i]["path"]

    def write_tsvs(self) -> None:
        for name, rows in self.rows.items():
            write_raw_tsv(self.tsv(name), CV_COLUMNS, ([r[c] for c in CV_COLUMNS] for r in rows))


def make_commonvoice(
    root: Path,
    lang: str = "ga-IE",
    counts: dict[str, int] | None = None,
) -> CvFolder:
    """train/dev/test with distinct speakers and sentences, validated.tsv = all of them plus
    three extra rows: one new (speaker and sentence), one by a dev speaker, one saying a test
    sentence; and an empty other.tsv / invalidated.tsv, as in a release."""
    counts = counts or {"train": 3, "dev": 2, "test": 2}
    folder = CvFolder(root / lang, lang)
    n = 0
    for split, count in counts.items():
        folder.rows[split] = []
        for i in range(count):
            clip = f"common_voice_{lang}_{1000 + n}.mp3"
            write_mp3(folder.clips / clip, clip_seconds(n))
            folder.rows[split].append(
                cv_row(lang, clip, f"{split} sentence {i}", f"{split}-spk{i}")
            )
            n += 1
    extra = [
        ("new sentence", "new-spk"),
        ("another sentence", "dev-spk0"),
        (folder.rows["test"][0]["sentence"] if "test" in folder.rows else "x", "other-spk"),
    ]
    validated = [r for rows in folder.rows.values() for r in rows]
    for sentence, speaker in extra:
        clip = f"common_voice_{lang}_{1000 + n}.mp3"
        write_mp3(folder.clips / clip, clip_seconds(n))
        validated.append(cv_row(lang, clip, sentence, speaker))
        n += 1
    folder.rows["validated"] = validated
    folder.rows["other"] = []
    folder.rows["invalidated"] = []
    folder.write_tsvs()
    return folder


COVOST_SPLIT_CYCLE = ("train", "train_covost", "dev", "test")


@dataclass
class CovostFixture:
    """CoVoST TSVs in ``covost_dir``; Common Voice ``cv_root/<lang>/{clips,validated.tsv}``."""

    covost_dir: Path
    cv_root: Path
    rows: dict[
        str, list[dict[str, str]]
    ]  # lang -> rows (path sentence translation client_id split)

    def clip(self, lang: str, i: int) -> Path:
        return self.cv_root / lang / "clips" / self.rows[lang][i]["path"]

    def tsv(self, lang: str) -> Path:
        return self.covost_dir / f"covost_v2.{lang}_en.tsv"


def make_covost(
    root: Path,
    langs: Sequence[str] = ("fr", "de"),
    n: int = 6,
    form: str = "released",
) -> CovostFixture:
    """CoVoST-2 X→EN for ``langs``, ``n`` clips each; ``split`` cycles train, train_covost, dev,
    test. ``form``: "released" (``path translation split``, sentence/client_id in validated.tsv),
    "full" (all five columns), "per_split" (get_covost_splits.py output) or "tar" (released,
    as ``.tsv.tar.gz``)."""
    covost_dir, cv_root = root / "covost", root / "cv"
    covost_dir.mkdir(parents=True, exist_ok=True)
    fixture = CovostFixture(covost_dir, cv_root, {})
    for lang in langs:
        rows = []
        for i in range(n):
            clip = f"common_voice_{lang}_{2000 + i}.mp3"
            write_mp3(cv_root / lang / "clips" / clip, clip_seconds(i))
            rows.append(
                {
                    "path": clip,
                    "sentence": f"{lang} phrase {i}",
                    "translation": f"english phrase {i}",
                    "client_id": f"{lang}-spk{i % 3}",
                    "split": COVOST_SPLIT_CYCLE[i % 4],
                }
            )
        fixture.rows[lang] = rows
        validated = [cv_row(lang, r["path"], r["sentence"], r["client_id"]) for r in rows]
        write_raw_tsv(
            cv_root / lang / "validated.tsv",
            CV_COLUMNS,
            ([v[c] for c in CV_COLUMNS] for v in validated),
        )
        write_covost_tsvs(fixture, lang, form)
    return fixture


def write_covost_tsvs(fixture: CovostFixture, lang: str, form: str) -> None:
    """(Re)write the CoVoST TSV(s) of ``lang`` from ``fixture.rows``."""
    rows = fixture.rows[lang]
    if form in ("released", "tar"):
        cols: tuple[str, ...] = ("path", "translation", "split")
        tsv = write_raw_tsv(fixture.tsv(lang), cols, ([r[c] for c in cols] for r in rows))
        if form == "tar":
            with tarfile.open(f"{tsv}.tar.gz", "w:gz") as tar:
                data = tsv.read_bytes()
                info = tarfile.TarInfo(tsv.name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            tsv.unlink()
    elif form == "full":
        cols = ("path", "sentence", "translation", "client_id", "split")
        write_raw_tsv(fixture.tsv(lang), cols, ([r[c] for c in cols] for r in rows))
    elif form == "per_split":
        cols = ("path", "sentence", "translation", "client_id")
        for split in ("train", "dev", "test"):
            chosen = [r for r in rows if r["split"] in ((split, f"{split}_covost"))]
            path = fixture.covost_dir / f"covost_v2.{lang}_en.{split}.tsv"
            write_raw_tsv(path, cols, ([r[c] for c in cols] for r in chosen))
    else:
        raise ValueError(form)
