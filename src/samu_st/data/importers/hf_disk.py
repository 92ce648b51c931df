"""A Hugging Face ``datasets`` folder written by ``save_to_disk`` → ``OUT/<split>/<lang>.jsonl``.

The folder holds a ``DatasetDict`` (splits train / validation / test; validation becomes dev,
other splits are counted as ``other_split``) or a single ``Dataset`` (imported as one split).
Audio comes from an ``audio`` column (the ``datasets.Audio`` feature or a plain struct: a file
``path``, encoded ``bytes``, or an ``array`` with its ``sampling_rate``) or a ``path`` column of
file paths. The ``Audio`` feature is read with ``decode=False`` (decoding in ``datasets`` needs
torchcodec); embedded bytes or arrays are decoded with soundfile and written as 16-bit FLAC files
under ``OUT/audio/<split>/`` so that every manifest points to a real file. Relative file paths
are resolved against ``audio_root`` (default: the dataset folder).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from samu_st.data.importers.common import (
    Candidate,
    Embedded,
    ImportOptions,
    ImportReport,
    SkipPolicy,
    SkipReason,
    check_language_code,
    filter_text,
    probe_candidates,
    write_manifests,
)
from samu_st.errors import DataError

# datasets split name → manifest split
SPLIT_MAP = {"train": "train", "validation": "dev", "valid": "dev", "dev": "dev", "test": "test"}


def _load(dataset_dir: Path, single_split: str) -> dict[str, tuple[Any, Path]]:
    """Split name → (``datasets.Dataset``, its folder) of a ``save_to_disk`` folder."""
    from datasets import Dataset, DatasetDict, load_from_disk  # slow import: only when used

    if not dataset_dir.is_dir():
        raise DataError(dataset_dir, "dataset folder not found")
    try:
        loaded = load_from_disk(str(dataset_dir))
    except (FileNotFoundError, ValueError, KeyError, OSError) as err:
        raise DataError(dataset_dir, f"not a dataset saved with save_to_disk ({err})") from None
    if isinstance(loaded, DatasetDict):
        return {name: (ds, dataset_dir / name) for name, ds in loaded.items()}
    if isinstance(loaded, Dataset):
        return {single_split: (loaded, dataset_dir)}
    raise DataError(dataset_dir, f"unexpected object {type(loaded).__name__} in the folder")


def _prepare(ds: Any, where: Path, text_column: str, extra: list[str]) -> tuple[Any, str]:
    """Check the columns; return the dataset restricted to them, audio undecoded, + audio column."""
    from datasets import Audio

    columns = list(ds.column_names)
    audio_column = "audio" if "audio" in columns else "path"
    missing = [c for c in (text_column, *extra) if c not in columns]
    if audio_column not in columns:
        missing.append("audio or path")
    if missing:
        raise DataError(
            where, f"missing column(s) {', '.join(missing)}; columns found: {', '.join(columns)}"
        )
    keep = [c for c in dict.fromkeys([audio_column, "path", text_column, *extra]) if c in columns]
    ds = ds.select_columns(keep)
    if isinstance(ds.features[audio_column], Audio):
        ds = ds.cast_column(audio_column, Audio(decode=False))
    return ds, audio_column


def _audio_of(row: Mapping[str, Any], audio_column: str) -> tuple[str, Embedded | None]:
    """(file path or name, embedded audio or None) of one row."""
    value = row[audio_column]
    if isinstance(value, str) or value is None:
        return value or "", None
    if not isinstance(value, Mapping):
        raise ValueError(f"unsupported audio value of type {type(value).__name__}")
    path = value.get("path") or (row.get("path") if audio_column != "path" else None) or ""
    if value.get("bytes"):
        return path, bytes(value["bytes"])
    if value.get("array") is not None:
        if not value.get("sampling_rate"):
            raise ValueError("audio array without a sampling_rate")
        return path, (np.asarray(value["array"], dtype=np.float32), int(value["sampling_rate"]))
    return path, None


def _rows(
    ds: Any,
    where: Path,
    split: str,
    lang: str,
    columns: tuple[str, str | None, str | None],
    dirs: tuple[Path, Path],
    policy: SkipPolicy,
) -> Iterator[Candidate]:
    """Candidates of one dataset split; embedded audio gets a FLAC path under OUT/audio/."""
    text_column, target_column, speaker_column = columns
    audio_root, audio_out = dirs
    ds, audio_column = _prepare(ds, where, text_column, [c for c in columns[1:] if c])
    policy.report.sources.append(str(where))
    embedded_ids: set[str] = set()
    for index, row in enumerate(ds):
        line = index + 1
        try:
            path, embedded = _audio_of(row, audio_column)
        except ValueError as err:
            policy.skip(SkipReason.CORRUPT_AUDIO, where, line, str(err))
            continue
        if not path and embedded is None:
            policy.skip(SkipReason.MISSING_AUDIO, where, line, "row has no audio path or data")
            continue
        uid = Path(path).stem or f"{split}-{line:07d}"
        if embedded is not None:
            uid = f"{uid}-{line:07d}" if uid in embedded_ids else uid
            embedded_ids.add(uid)
            audio = audio_out / split / f"{uid}.flac"
        else:
            audio = Path(path) if Path(path).is_absolute() else audio_root / path
        yield Candidate(
            id=uid,
            audio=audio,
            language=lang,
            source_text=str(row[text_column] or "").strip(),
            target_text=str(row[target_column] or "").strip() if target_column else "",
            speaker=str(row[speaker_column] or "") if speaker_column else "",
            split=split,
            source=str(where),
            line=line,
            embedded=embedded,
        )


def import_hf_disk(
    dataset_dir: str | Path,
    out_dir: str | Path,
    language: str,
    text_column: str = "sentence",
    *,
    target_column: str | None = None,
    speaker_column: str | None = "client_id",
    audio_root: str | Path | None = None,
    single_split: str = "train",
    options: ImportOptions | None = None,
) -> ImportReport:
    """Import a ``save_to_disk`` dataset into ``out_dir/<split>/<language>.jsonl``.

    ``text_column``: the transcript; ``target_column``: an optional translation column;
    ``speaker_column``: used when the dataset has it; ``single_split``: the split a plain
    ``Dataset`` (not a ``DatasetDict``) is imported as. Rows are numbered from 1 in messages
    (``<dataset>/<split>:<row>``).
    """
    options = options or ImportOptions()
    root, out = Path(dataset_dir), Path(out_dir)
    lang = check_language_code(language, root)
    if single_split not in ("train", "dev", "test"):
        raise DataError(root, f"single_split must be train, dev or test, got {single_split!r}")
    splits = _load(root, single_split)
    report = ImportReport("hf-disk", options=asdict(options))
    policy = SkipPolicy(report, options.strict)
    dirs = (Path(audio_root) if audio_root else root, out / "audio")

    def candidates() -> Iterator[Candidate]:
        for name, (ds, where) in splits.items():
            split = SPLIT_MAP.get(name)
            if split is None:
                detail = f"split {name!r} ({len(ds)} rows) is not imported"
                report.add_skip(SkipReason.OTHER_SPLIT, str(where), detail, count=len(ds))
                continue
            speaker = speaker_column if speaker_column in ds.column_names else None
            columns = (text_column, target_column, speaker)
            yield from _rows(ds, where, split, lang, columns, dirs, policy)

    checked = filter_text(candidates(), policy, require_target=target_column is not None)
    utterances = probe_candidates(checked, options, policy, desc="hf-disk audio")
    write_manifests(out, utterances, report, [lang])
    return report
