"""What every importer shares: options, the skip-or-strict policy, parallel audio probing, the
import report, and writing one manifest per split and language.

An importer turns the rows of its corpus into :class:`Candidate` utterances (text checks happen
here, cheaply), then :func:`probe_candidates` reads every audio header in a thread pool (and with
``check_audio`` decodes every clip) and keeps what passes. Every rejected row is either counted
in the :class:`ImportReport` under a :class:`SkipReason` with a ``file:line`` example, or, with
``strict``, raised as the first :class:`~samu_st.errors.DataError`.
"""

from __future__ import annotations

import io
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from tqdm import tqdm

from samu_st.atomic import atomic_write
from samu_st.audio import audio_info, is_silent, load_audio
from samu_st.data.importers.report_file import MAX_EXAMPLES, write_report
from samu_st.data.manifest import LANGUAGE_CODE_RE, MAX_TEXT_CHARS, Utterance, write_manifest
from samu_st.errors import AudioError, DataError

Seconds = float
REPORT_NAME = "import_report.json"
# The manifest schema's language-code format (Common Voice style: "fr", "zh-CN", "ga-IE", "yue").
# mp3 decoders may drop up to a couple of frames of encoder delay; more missing means truncation.
_TRUNCATION_SLACK = 2 * 1152


class SkipReason(str, Enum):
    """Why a row was not imported. Bad data unless listed in :data:`EXCLUSIONS`."""

    MISSING_AUDIO = "missing_audio"
    EMPTY_AUDIO = "empty_audio"  # a 0-byte file, or a header with no samples
    CORRUPT_AUDIO = (
        "corrupt_audio"  # unreadable header; with check_audio also undecodable/truncated
    )
    AUDIO_TOO_LONG = "audio_too_long"
    SILENT_AUDIO = "silent_audio"  # only detected with check_audio
    EMPTY_TRANSCRIPT = "empty_transcript"
    EMPTY_TRANSLATION = "empty_translation"
    TEXT_TOO_LONG = "text_too_long"
    UNKNOWN_LANGUAGE = "unknown_language"
    MALFORMED_ROW = "malformed_row"  # wrong number of fields in a TSV row
    NOT_IN_VALIDATED = "not_in_validated"  # CoVoST row whose clip is not in validated.tsv
    DUPLICATE = "duplicate"  # the same clip twice in one split and language
    OTHER_SPLIT = "other_split"  # rows of splits that are not imported (e.g. CoVoST "excluded")
    DEV_TEST_OVERLAP = "dev_test_overlap"  # validated.tsv rows sharing a clip/speaker/sentence
    # with dev or test, left out of a validated-based train set


# Deliberate exclusions: counted in the report, never an error in strict mode.
EXCLUSIONS = frozenset({SkipReason.OTHER_SPLIT, SkipReason.DEV_TEST_OVERLAP})


@dataclass(frozen=True)
class ImportOptions:
    """Settings shared by every importer."""

    strict: bool = False  # raise at the first bad row or clip instead of skipping and counting it
    max_duration: Seconds | None = 30.0  # clips longer than this are skipped; None: no limit
    check_audio: bool = False  # decode every clip: finds truncated and silent audio (slower)
    silence_db: float = -60.0  # with check_audio, RMS below this (dBFS) counts as silence
    workers: int = 8  # threads probing audio (soundfile releases the GIL while reading)
    progress: bool = True  # show a tqdm progress bar on a terminal


@dataclass
class ImportReport:
    """Kept and skipped counts of one import, written as one entry of ``OUT/import_report.json``
    (see :mod:`samu_st.data.importers.report_file`: other imports' entries are kept)."""

    corpus: str
    options: dict[str, Any] = field(default_factory=dict)
    languages: list[str] = field(default_factory=list)  # languages this import covered
    sources: list[str] = field(default_factory=list)  # input files read
    kept: dict[str, dict[str, int]] = field(default_factory=dict)  # split -> language -> count
    hours: dict[str, dict[str, float]] = field(default_factory=dict)  # split -> language -> h
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count (bad data)
    excluded: dict[str, int] = field(default_factory=dict)  # reason -> count (deliberate)
    examples: dict[str, list[str]] = field(default_factory=dict)  # reason -> "file:line: why"
    manifests: list[str] = field(default_factory=list)  # manifests written
    notes: list[str] = field(default_factory=list)  # what a user should know (absent splits...)

    def add_kept(self, utt: Utterance) -> None:
        by_lang = self.kept.setdefault(utt.split, {})
        by_lang[utt.language] = by_lang.get(utt.language, 0) + 1
        hours = self.hours.setdefault(utt.split, {})
        hours[utt.language] = hours.get(utt.language, 0.0) + utt.duration / 3600.0

    def add_skip(self, reason: SkipReason, where: str, detail: str, count: int = 1) -> None:
        counts = self.excluded if reason in EXCLUSIONS else self.skipped
        counts[reason.value] = counts.get(reason.value, 0) + count
        quoted = self.examples.setdefault(reason.value, [])
        if len(quoted) < MAX_EXAMPLES:
            quoted.append(f"{where}: {detail}")

    @property
    def total_kept(self) -> int:
        return sum(n for by_lang in self.kept.values() for n in by_lang.values())

    @property
    def total_skipped(self) -> int:
        return sum(self.skipped.values())

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["hours"] = {s: {k: round(h, 6) for k, h in v.items()} for s, v in self.hours.items()}
        data["total_kept"] = self.total_kept
        data["total_skipped"] = self.total_skipped
        data["total_hours"] = round(sum(h for v in self.hours.values() for h in v.values()), 6)
        return data

    def write(self, out_dir: str | Path, name: str = REPORT_NAME) -> Path:
        """Merge into ``OUT/import_report.json`` (other languages' entries kept); any other
        ``name`` (the failed-import report) is written on its own."""
        path = Path(out_dir) / name
        return write_report(path, self.to_dict(), merge=name == REPORT_NAME)

    def summary(self) -> str:
        """One paragraph: kept per split (hours), skipped and excluded by reason."""
        splits = ", ".join(
            f"{split} {sum(v.values())} ({sum(self.hours[split].values()):.2f} h)"
            for split, v in self.kept.items()
        )
        langs = sorted({lang for v in self.kept.values() for lang in v})
        text = (
            f"{self.corpus}: kept {self.total_kept} utterances in {len(langs)} language(s)"
            f" [{' '.join(langs)}]" + (f": {splits}" if splits else "") + "; "
        )
        reasons = ", ".join(f"{k} {n}" for k, n in sorted(self.skipped.items()))
        text += f"skipped {self.total_skipped}" + (f" ({reasons})" if reasons else "")
        if self.excluded:
            text += "; excluded " + ", ".join(f"{k} {n}" for k, n in sorted(self.excluded.items()))
        return text + "." + "".join(f" Note: {n}." for n in self.notes)


class SkipPolicy:
    """Skip-and-count (default) or raise-at-first (``strict``) for every bad row or clip."""

    def __init__(self, report: ImportReport, strict: bool) -> None:
        self.report = report
        self.strict = strict

    def skip(self, reason: SkipReason, path: str | Path, line: int | None, detail: str) -> None:
        if self.strict and reason not in EXCLUSIONS:
            raise DataError(path, f"{detail} [{reason.value}]", line)
        where = f"{path}:{line}" if line is not None else str(path)
        self.report.add_skip(reason, where, detail)

    def bad_row(self, err: DataError) -> None:
        """``on_bad_row`` callback for :func:`samu_st.data.tsv.iter_tsv`."""
        self.skip(SkipReason.MALFORMED_ROW, err.path, err.line, err.reason)


# Audio embedded in a dataset: encoded file bytes, or (samples (S,) or (S, C), sample rate).
Embedded = bytes | tuple[np.ndarray, int]


@dataclass(frozen=True, eq=False)
class Candidate:
    """A row that passed parsing; becomes an :class:`Utterance` once its audio is probed."""

    id: str
    audio: Path  # where the clip is (or, with ``embedded``, will be written as FLAC)
    language: str
    source_text: str
    target_text: str
    speaker: str
    split: str
    source: str  # the file (or dataset split folder) the row comes from, for messages
    line: int | None  # 1-based line (TSV) or row number (dataset)
    embedded: Embedded | None = None

    def utterance(self, duration: Seconds) -> Utterance:
        return Utterance(
            id=self.id,
            audio=str(self.audio.absolute()),
            duration=duration,
            language=self.language,
            source_text=self.source_text,
            target_text=self.target_text,
            speaker=self.speaker,
            split=self.split,
        )


def check_language_code(code: str, where: str | Path) -> str:
    """``code`` if it has the manifest's language-code format, else :class:`DataError`."""
    if not LANGUAGE_CODE_RE.match(code):
        raise DataError(
            where,
            f"unknown language code {code!r}: expected a Common Voice code such as"
            " 'fr', 'zh-CN', 'ga-IE' (pass the language explicitly)",
        )
    return code


def resolve_clip(clips_dir: Path, name: str) -> Path:
    """The clip ``name`` of a TSV ``path`` column; old releases omit the ``.mp3`` suffix."""
    path = clips_dir / name
    if not path.suffix and not path.exists() and path.with_suffix(".mp3").exists():
        return path.with_suffix(".mp3")
    return path


def filter_text(
    candidates: Iterable[Candidate], policy: SkipPolicy, require_target: bool = False
) -> Iterator[Candidate]:
    """Drop rows with an empty or overlong transcript (or translation), and duplicate clips."""
    seen: set[tuple[str, str, str]] = set()
    for c in candidates:
        reason, detail = None, ""
        if not c.source_text:
            reason, detail = SkipReason.EMPTY_TRANSCRIPT, f"empty transcript for {c.id}"
        elif require_target and not c.target_text:
            reason, detail = SkipReason.EMPTY_TRANSLATION, f"empty translation for {c.id}"
        elif max(len(c.source_text), len(c.target_text)) > MAX_TEXT_CHARS:
            n = max(len(c.source_text), len(c.target_text))
            reason = SkipReason.TEXT_TOO_LONG
            detail = f"text of {c.id} has {n} characters (limit {MAX_TEXT_CHARS})"
        elif (c.split, c.language, c.id) in seen:
            reason, detail = SkipReason.DUPLICATE, f"{c.id} appears twice in {c.split}"
        if reason is not None:
            policy.skip(reason, c.source, c.line, detail)
            continue
        seen.add((c.split, c.language, c.id))
        yield c


@dataclass(frozen=True)
class Probe:
    """Outcome of probing one clip."""

    duration: Seconds  # 0 when skipped
    reason: SkipReason | None = None
    detail: str = ""


def write_embedded_audio(dest: Path, data: Embedded) -> None:
    """Write embedded audio (encoded bytes or a sample array) as a 16-bit FLAC file."""
    if isinstance(data, bytes):
        samples, sample_rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    else:
        samples, sample_rate = np.asarray(data[0], dtype=np.float32), int(data[1])
    if samples.size == 0:
        raise ValueError("embedded audio has no samples")
    clipped = np.clip(samples, -1.0, 1.0)

    def write(tmp: Path) -> None:
        sf.write(tmp, clipped, sample_rate, format="FLAC", subtype="PCM_16")

    atomic_write(dest, write, point="import.audio")


def probe_audio(c: Candidate, options: ImportOptions) -> Probe:
    """Check one clip; thread-safe. Header only, unless ``options.check_audio``."""
    path = c.audio
    if c.embedded is not None:
        try:
            write_embedded_audio(path, c.embedded)
        except (sf.LibsndfileError, RuntimeError, ValueError, TypeError) as err:
            return Probe(0.0, SkipReason.CORRUPT_AUDIO, f"cannot decode embedded audio: {err}")
    if path.is_dir():
        detail = f"is a directory, expected an audio file: {path}"
        return Probe(0.0, SkipReason.MISSING_AUDIO, detail)
    if not path.is_file():
        return Probe(0.0, SkipReason.MISSING_AUDIO, f"audio file not found: {path}")
    if path.stat().st_size == 0:
        return Probe(0.0, SkipReason.EMPTY_AUDIO, f"empty audio file (0 bytes): {path}")
    try:
        info = audio_info(path)
    except AudioError as err:
        return Probe(0.0, SkipReason.CORRUPT_AUDIO, str(err))
    if info.frames <= 0:
        return Probe(0.0, SkipReason.EMPTY_AUDIO, f"audio has no samples: {path}")
    limit = options.max_duration
    if limit is not None and info.duration > limit:
        detail = f"{path}: {info.duration:.1f} s long, over the limit of {limit:g} s"
        return Probe(0.0, SkipReason.AUDIO_TOO_LONG, detail)
    if not options.check_audio:
        return Probe(info.duration)
    try:
        wav = load_audio(path, sample_rate=info.sample_rate)
    except AudioError as err:
        return Probe(0.0, SkipReason.CORRUPT_AUDIO, str(err))
    if wav.size < 0.95 * info.frames - _TRUNCATION_SLACK:
        detail = f"{path}: truncated, decoded {wav.size} of {info.frames} samples"
        return Probe(0.0, SkipReason.CORRUPT_AUDIO, detail)
    if is_silent(wav, options.silence_db):
        return Probe(
            0.0, SkipReason.SILENT_AUDIO, f"{path}: silent (RMS < {options.silence_db} dB)"
        )
    return Probe(wav.size / info.sample_rate)


def _chunks(items: Iterable[Candidate], size: int) -> Iterator[list[Candidate]]:
    chunk: list[Candidate] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def probe_candidates(
    candidates: Iterable[Candidate],
    options: ImportOptions,
    policy: SkipPolicy,
    *,
    total: int | None = None,
    desc: str = "probing audio",
) -> list[Utterance]:
    """Probe clips in a thread pool, in bounded chunks (input order kept); keep what passes."""
    kept: list[Utterance] = []
    workers = max(1, options.workers)
    disable = None if options.progress else True  # None: tqdm shows a bar only on a terminal
    with (
        ThreadPoolExecutor(max_workers=workers) as pool,
        tqdm(total=total, desc=desc, unit="clip", disable=disable) as bar,
    ):
        for chunk in _chunks(candidates, 64 * workers):
            probes = pool.map(lambda c: probe_audio(c, options), chunk)
            for c, probe in zip(chunk, probes, strict=True):
                bar.update(1)
                if probe.reason is not None:
                    policy.skip(probe.reason, c.source, c.line, probe.detail)
                else:
                    kept.append(c.utterance(probe.duration))
    return kept


def write_manifests(
    out_dir: str | Path,
    utterances: Iterable[Utterance],
    report: ImportReport,
    languages: Iterable[str] = (),
) -> None:
    """``OUT/<split>/<lang>.jsonl`` per split and language (input order), then the report.

    Manifests of an earlier import into the same folder for ``languages`` that this import
    leaves empty are removed, so the folder always matches its report. When nothing at all
    was kept, nothing in ``out_dir`` is touched: the report goes to
    ``import_report.failed.json`` and :class:`DataError` is raised.
    """
    out = Path(out_dir)
    groups: dict[tuple[str, str], list[Utterance]] = defaultdict(list)
    for utt in utterances:
        groups[(utt.split, utt.language)].append(utt)
    report.languages = sorted(set(languages) | {lang for _, lang in groups})
    if not groups:
        report_path = report.write(out, name="import_report.failed.json")
        reasons = Counter(report.skipped) + Counter(report.excluded)
        why = ", ".join(f"{k} {n}" for k, n in reasons.most_common()) or "no rows"
        raise DataError(report_path, f"no utterance could be imported ({why})")
    for lang in languages:
        for split in ("train", "dev", "test"):
            stale = out / split / f"{lang}.jsonl"
            if (split, lang) not in groups and stale.is_file():
                stale.unlink()
    for (split, lang), utts in sorted(groups.items()):
        path = out / split / f"{lang}.jsonl"
        write_manifest(path, utts)
        report.manifests.append(str(path))
        for utt in utts:
            report.add_kept(utt)
    report.write(out)
