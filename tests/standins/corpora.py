"""Tiny CoVoST-2 and Common Voice 8 corpora in the layouts their releases use (DESIGN.md §2b, §7).

What a researcher has on disk for the paper, shrunk:

- ``cv-corpus-8.0-2022-01-19/<lang>/validated.tsv`` + ``clips/*.mp3`` (48 kHz mono mp3), and
  nothing else: neither ``train/dev/test.tsv`` nor ``other.tsv``. That is what CoVoST-2 points
  into and what step 2 (distillation) and the CTC baseline train on. The header is Common
  Voice 8's: ``client_id path sentence up_votes down_votes age gender accent locale segment``
  (``accent``; releases from 10.0 on call it ``accents``); client ids are 128-hex-digit hashes.
- ``covost_v2/covost_v2.<lang>_en.tsv`` per source language (or the released
  ``.tsv.tar.gz``). get_covost_splits.py and the other loaders read only ``path translation
  split`` from it and take ``sentence`` and ``client_id`` from ``validated.tsv`` (an inner join
  on ``path``). The released files also carry the transcript (``path sentence translation
  split``, the default here); ``covost_columns=COVOST_READ_COLUMNS`` writes the minimal form.
  Train rows are ``split`` in {train, train_covost}; the rows are in another order than
  ``validated.tsv``, and ``validated.tsv`` holds clips no CoVoST split uses, as in the release.

Languages default to fr de ca cy ja: high (fr, de, ca) and low (cy, ja) resource, two of them
(ca, cy) without an MBART-50 language code. Text is UTF-8 with non-ASCII letters and a raw
``"`` (the TSVs are read with ``QUOTE_NONE``). Clips last 0.3-1.0 s and differ in pitch.

:func:`write_paper_corpora` writes it all; :func:`import_paper_corpora` runs the project's
importers on it as ``samu-st prepare covost2`` and ``samu-st prepare commonvoice
--train-from-validated`` (one call per language into one folder) do.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
import soundfile as sf

from fixtures_corpora import CV_COLUMNS, CV_RATE, tone, write_raw_tsv
from samu_st.data.importers import (
    ImportOptions,
    ImportReport,
    import_commonvoice,
    import_covost2,
)

CV8_RELEASE = "cv-corpus-8.0-2022-01-19"
# Common Voice 8.0 validated.tsv header.
CV8_COLUMNS = tuple("accent" if c == "accents" else c for c in CV_COLUMNS)  # 8.0: singular
COVOST_RELEASE_COLUMNS = ("path", "sentence", "translation", "split")
COVOST_READ_COLUMNS = ("path", "translation", "split")  # what get_covost_splits.py reads
PAPER_LANGUAGES = ("fr", "de", "ca", "cy", "ja")
SPLIT_SIZES: Mapping[str, int] = {"train": 6, "dev": 2, "test": 2}
EXTRA_VALIDATED = 2  # validated.tsv rows that no CoVoST split uses
MANIFEST_SPLIT = {"train": "train", "train_covost": "train", "dev": "dev", "test": "test"}

# (source, English) subjects and predicates: every pairing is a distinct sentence.
_SUBJECTS = {
    "fr": [("Le chat", "The cat"), ("Ma sœur", "My sister"), ("Le garçon", "The boy")],
    "de": [("Die Katze", "The cat"), ("Meine Schwester", "My sister"), ("Der Junge", "The boy")],
    "ca": [("El gat", "The cat"), ("La meva germana", "My sister"), ("El noi", "The boy")],
    "cy": [("Mae'r gath", "The cat"), ("Mae fy chwaer", "My sister"), ("Mae'r bachgen", "The boy")],
    "ja": [("猫は", "The cat"), ("私の姉は", "My sister"), ("男の子は", "The boy")],
}
_PREDICATES = {
    "fr": ["mange une pomme.", "lit un livre.", "boit du café.", "dit « bonjour »."],
    "de": ["isst einen Apfel.", "liest ein Buch.", "trinkt Kaffee.", 'sagt "Grüß Gott".'],
    "ca": ["menja una poma.", "llegeix un llibre.", "beu cafè.", "diu «bon dia»."],
    "cy": ["yn bwyta afal.", "yn darllen llyfr.", "yn yfed coffi.", 'yn dweud "bore da".'],
    "ja": ["りんごを食べる。", "本を読む。", "コーヒーを飲む。", "「こんにちは」と言う。"],
}
_ENGLISH = ["eats an apple.", "reads a book.", "drinks coffee.", 'says "hello".']


@dataclass(frozen=True)
class StandinClip:
    """One row of a language's validated.tsv (and of its CoVoST TSV unless ``split`` is "")."""

    path: str  # clip file name, the TSVs' ``path``
    sentence: str  # transcript (validated.tsv)
    translation: str  # English (CoVoST); "" for a clip no CoVoST split uses
    client_id: str  # speaker hash
    split: str  # CoVoST ``split`` value (train, train_covost, dev, test); "" for none
    seconds: float  # clip duration


@dataclass(frozen=True)
class PaperCorpora:
    """Where :func:`write_paper_corpora` put things, and what it wrote."""

    root: Path
    cv_root: Path  # CV8_RELEASE folder: <lang>/validated.tsv and <lang>/clips/
    covost_tsv_dir: Path  # covost_v2.<lang>_en.tsv (or .tsv.tar.gz) per language
    languages: tuple[str, ...]
    clips: Mapping[str, tuple[StandinClip, ...]]  # lang -> validated.tsv rows, in file order

    def cv_lang_dir(self, lang: str) -> Path:
        return self.cv_root / lang

    def covost_tsv(self, lang: str) -> Path:
        return self.covost_tsv_dir / f"covost_v2.{lang}_en.tsv"

    def covost_split(self, lang: str, split: str) -> list[StandinClip]:
        """The clips of manifest split ``split`` (train takes train and train_covost)."""
        return [c for c in self.clips[lang] if MANIFEST_SPLIT.get(c.split) == split]


def _sentences(lang: str, n: int) -> list[tuple[str, str]]:
    """``n`` distinct (sentence, English translation) pairs."""
    subjects = _SUBJECTS.get(lang) or [(f"{lang} subject {i}", f"Subject {i}") for i in range(3)]
    predicates = _PREDICATES.get(lang) or [f"{lang} predicate {i}." for i in range(4)]
    glue = "" if lang == "ja" else " "
    pairs = [
        (f"{s}{glue}{p}", f"{e} {_ENGLISH[j]}")
        for j, p in enumerate(predicates)
        for s, e in subjects
    ]
    if n > len(pairs):
        raise ValueError(f"at most {len(pairs)} sentences per language, asked for {n}")
    return pairs[:n]


def _speaker(lang: str, name: str) -> str:
    return hashlib.sha512(f"{lang}:{name}".encode()).hexdigest()


def _split_values(sizes: Mapping[str, int]) -> list[str]:
    """CoVoST ``split`` values: the last train row is ``train_covost`` (CoVoST 1's train)."""
    values = [s for s, n in sizes.items() for _ in range(n)]
    if values.count("train") > 1:
        values[len(values) - 1 - values[::-1].index("train")] = "train_covost"
    return values + [""] * EXTRA_VALIDATED


def _language_clips(lang: str, index: int, sizes: Mapping[str, int]) -> list[StandinClip]:
    splits = _split_values(sizes)
    clips = []
    for k, (split, (sentence, english)) in enumerate(
        zip(splits, _sentences(lang, len(splits)), strict=True)
    ):
        # Speakers: two clips each in train, one per held-out split, one for the extras.
        group = MANIFEST_SPLIT.get(split, "extra")
        who = f"{group}-{k // 2}" if group == "train" else group
        clips.append(
            StandinClip(
                path=f"common_voice_{lang}_{17_300_000 + 1000 * index + k}.mp3",
                sentence=sentence,
                translation=english if split else "",
                client_id=_speaker(lang, who),
                split=split,
                seconds=round(0.3 + 0.7 * ((5 * k) % 12) / 11, 2),
            )
        )
    return clips


def _cv_row(lang: str, clip: StandinClip, k: int) -> list[str]:
    fields = {
        "client_id": clip.client_id,
        "path": clip.path,
        "sentence": clip.sentence,
        "up_votes": "2",
        "down_votes": "0",
        "age": ("twenties", "fourties", "")[k % 3],
        "gender": ("male", "female", "")[k % 3],
        "accent": "",
        "locale": lang,
        "segment": "",
    }
    return [fields[c] for c in CV8_COLUMNS]


def _write_covost(
    path: Path, clips: Sequence[StandinClip], columns: Sequence[str], archive: bool
) -> None:
    # The release lists clips in its own order, not validated.tsv's: the join must be by path.
    rows = [[getattr(c, col) for col in columns] for c in reversed(clips) if c.split]
    write_raw_tsv(path, columns, rows)
    if archive:
        data = path.read_bytes()
        with tarfile.open(f"{path}.tar.gz", "w:gz") as tar:
            info = tarfile.TarInfo(path.name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        path.unlink()


def write_paper_corpora(
    root: str | Path,
    languages: Sequence[str] = PAPER_LANGUAGES,
    sizes: Mapping[str, int] = SPLIT_SIZES,
    *,
    covost_columns: Sequence[str] = COVOST_RELEASE_COLUMNS,
    archive: bool = False,
) -> PaperCorpora:
    """Write the Common Voice 8 folders and CoVoST-2 TSVs of ``languages`` under ``root``.

    ``sizes``: CoVoST clips per split and language; ``archive``: write the CoVoST TSVs as the
    released ``.tsv.tar.gz``. Skips the calling test where libsndfile has no mp3 encoder."""
    if "MP3" not in sf.available_formats():
        pytest.skip("libsndfile without mp3 support")
    base = Path(root)
    cv_root, covost_dir = base / CV8_RELEASE, base / "covost_v2"
    covost_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, tuple[StandinClip, ...]] = {}
    for index, lang in enumerate(languages):
        clips = _language_clips(lang, index, sizes)
        for k, clip in enumerate(clips):
            dest = cv_root / lang / "clips" / clip.path
            dest.parent.mkdir(parents=True, exist_ok=True)
            samples = tone(clip.seconds, CV_RATE, freq=150.0 + 35.0 * k)
            sf.write(dest, samples, CV_RATE, format="MP3", subtype="MPEG_LAYER_III")
        rows = [_cv_row(lang, c, k) for k, c in enumerate(clips)]
        write_raw_tsv(cv_root / lang / "validated.tsv", CV8_COLUMNS, rows)
        _write_covost(covost_dir / f"covost_v2.{lang}_en.tsv", clips, covost_columns, archive)
        written[lang] = tuple(clips)
    return PaperCorpora(base, cv_root, covost_dir, tuple(languages), written)


@dataclass(frozen=True)
class PaperManifests:
    """Manifest folders made from :class:`PaperCorpora` by the project's importers."""

    covost: Path  # covost/<split>/<lang>.jsonl: step 3's speech translation data
    cv: Path  # cv/train/<lang>.jsonl: step 2's (and the CTC baseline's) Common Voice data
    covost_report: ImportReport
    cv_reports: Mapping[str, ImportReport]  # lang -> its Common Voice import


def import_paper_corpora(
    corpora: PaperCorpora, out_root: str | Path, options: ImportOptions | None = None
) -> PaperManifests:
    """``prepare covost2`` once and ``prepare commonvoice --train-from-validated`` per language
    (into one folder), through the library API."""
    opts = options or ImportOptions(progress=False, workers=2)
    out = Path(out_root)
    covost_report = import_covost2(
        corpora.covost_tsv_dir, corpora.cv_root, out / "covost", corpora.languages, opts
    )
    cv_reports = {
        lang: import_commonvoice(
            corpora.cv_lang_dir(lang), out / "cv", train_from_validated=True, options=opts
        )
        for lang in corpora.languages
    }
    return PaperManifests(out / "covost", out / "cv", covost_report, cv_reports)
