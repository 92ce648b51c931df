"""The one manifest schema every corpus is imported into (JSON lines, one utterance a line).

Audio paths are stored as written; relative paths are resolved against the manifest's folder, so
a corpus folder can be moved as a whole.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Literal

from samu_st.atomic import atomic_write
from samu_st.errors import DataError

Seconds = float
Split = Literal["train", "dev", "test", "unlabeled"]
SPLITS: tuple[str, ...] = ("train", "dev", "test", "unlabeled")
# BCP-47-like codes as Common Voice uses them: "fr", "zh-CN", "sv-SE", "ga-IE", "rm-sursilv".
LANGUAGE_CODE_RE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})?$")
MAX_TEXT_CHARS = 2000  # longer transcripts are data errors (CoVoST-2 / Common Voice are < 500)


@dataclass(frozen=True)
class Utterance:
    """One line of a manifest."""

    id: str  # unique within the manifest
    audio: str  # audio file path; relative paths are relative to the manifest's folder
    duration: Seconds  # length of the audio in seconds (after decoding, before resampling)
    language: str  # source-language code (CoVoST-2 / Common Voice), e.g. "fr", "zh-CN"
    source_text: str  # transcript in the source language ("" when unknown, e.g. unlabeled audio)
    target_text: str  # English translation ("" for ASR-only corpora)
    speaker: str  # speaker id (Common Voice client_id, or a synthetic voice id)
    split: str  # one of SPLITS

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, sort_keys=False)


_FIELDS = {f.name: f.type for f in fields(Utterance)}


def validate_record(record: object, path: str | Path, line: int) -> Utterance:
    """An :class:`Utterance` from one decoded JSON value, or a :class:`DataError` at file:line."""
    if not isinstance(record, dict):
        raise DataError(path, "expected a JSON object", line)
    missing = [k for k in _FIELDS if k not in record]
    if missing:
        raise DataError(path, f"missing field(s): {', '.join(missing)}", line)
    extra = sorted(set(record) - set(_FIELDS))
    if extra:
        raise DataError(path, f"unknown field(s): {', '.join(extra)}", line)
    for key in ("id", "audio", "language", "source_text", "target_text", "speaker", "split"):
        if not isinstance(record[key], str):
            raise DataError(path, f"field {key!r} must be a string", line)
        try:
            record[key].encode("utf-8")
        except UnicodeEncodeError:
            raise DataError(path, f"field {key!r} is not valid Unicode", line) from None
    duration = record["duration"]
    if isinstance(duration, bool) or not isinstance(duration, (int, float)):
        raise DataError(path, "field 'duration' must be a number of seconds", line)
    try:
        duration = float(duration)
    except OverflowError:
        raise DataError(path, "duration is too large", line) from None
    if not math.isfinite(duration) or duration <= 0:
        raise DataError(path, f"duration must be positive and finite, got {duration}", line)
    if not record["id"]:
        raise DataError(path, "empty id", line)
    if not record["audio"]:
        raise DataError(path, "empty audio path", line)
    if not LANGUAGE_CODE_RE.match(record["language"]):
        raise DataError(path, f"invalid language code {record['language']!r}", line)
    if record["split"] not in SPLITS:
        raise DataError(path, f"split must be one of {list(SPLITS)}, got {record['split']!r}", line)
    for key in ("source_text", "target_text"):
        if len(record[key]) > MAX_TEXT_CHARS:
            raise DataError(
                path, f"{key} has {len(record[key])} characters (limit {MAX_TEXT_CHARS})", line
            )
    return Utterance(**{**record, "duration": duration})


def iter_manifest(path: str | Path) -> Iterator[Utterance]:
    """Yield validated utterances; the first bad line raises :class:`DataError` with file:line."""
    p = Path(path)
    if p.is_dir():
        raise DataError(p, "is a directory, expected a .jsonl manifest file")
    if not p.exists():
        raise DataError(p, "manifest not found")
    seen: set[str] = set()
    with p.open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():  # blank: ASCII whitespace only (a lone control character such
                continue  # as U+001C is str-whitespace but not blank: it is reported below)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise DataError(p, f"not UTF-8 ({err.reason})", lineno) from None
            try:
                record = json.loads(text)
            except json.JSONDecodeError as err:
                raise DataError(p, f"not valid JSON ({err.msg})", lineno) from None
            except RecursionError:
                raise DataError(p, "JSON nested too deeply", lineno) from None
            utt = validate_record(record, p, lineno)
            if utt.id in seen:
                raise DataError(p, f"duplicate id {utt.id!r}", lineno)
            seen.add(utt.id)
            yield utt


def read_manifest(path: str | Path) -> list[Utterance]:
    """All utterances of a manifest, validated."""
    return list(iter_manifest(path))


def resolve_audio(utt: Utterance, manifest_path: str | Path) -> Path:
    """Absolute audio path of ``utt``; relative paths are relative to the manifest's folder."""
    audio = Path(utt.audio)
    return audio if audio.is_absolute() else Path(manifest_path).resolve().parent / audio


def write_manifest(path: str | Path, utterances: Iterable[Utterance]) -> int:
    """Write a manifest atomically (temporary file, then rename). Returns the line count."""
    n = 0

    def write(tmp: Path) -> None:
        nonlocal n
        with tmp.open("w", encoding="utf-8") as fh:
            for utt in utterances:
                fh.write(utt.to_json() + "\n")
                n += 1
            fh.flush()
            os.fsync(fh.fileno())

    atomic_write(path, write, point="manifest")
    return n
