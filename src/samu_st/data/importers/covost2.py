"""CoVoST-2 X→EN: the released TSVs (or the per-split TSVs of get_covost_splits.py) + Common Voice
clips → ``OUT/<split>/<lang>.jsonl`` manifests and ``OUT/import_report.json``.

Accepted per source language ``<src>`` (files in ``covost_dir``):

- ``covost_v2.<src>_en.tsv``, at least the columns ``path translation split``; the released
  archive ``covost_v2.<src>_en.tsv.tar.gz`` is unpacked into ``OUT/covost_tsv/`` first. Train is
  ``split`` in {train, train_covost}; dev and test match exactly; other values (CoVoST leaves some
  clips out) are counted as ``other_split``. This file wins when per-split files also exist.
- ``covost_v2.<src>_en.<split>.tsv`` (split in train, dev, test), at least ``path translation``.

When a file lacks ``sentence`` or ``client_id``, they come from the Common Voice
``validated.tsv`` of that language, joined on ``path`` as get_covost_splits.py does; it is found
beside the language's clips folder. ``clips_dir`` is either a Common Voice root holding
``<lang>/clips/`` (and ``<lang>/validated.tsv``) for every language, or one clips folder used for
all languages (its parent holds ``validated.tsv``).
"""

from __future__ import annotations

import logging
import re
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from samu_st.atomic import atomic_write
from samu_st.data.importers.common import (
    Candidate,
    ImportOptions,
    ImportReport,
    SkipPolicy,
    SkipReason,
    filter_text,
    probe_candidates,
    resolve_clip,
    write_manifests,
)
from samu_st.data.tsv import iter_tsv, tsv_columns
from samu_st.errors import DataError
from samu_st.languages import COVOST_CODES

log = logging.getLogger(__name__)

_NAME_RE = re.compile(
    r"^covost_v2\.(?P<src>[A-Za-z-]+)_en(?:\.(?P<split>train|dev|test))?\.tsv(?P<tar>\.tar\.gz)?$"
)
# CoVoST-2 `split` values → manifest split (get_covost_splits.py, get_v2_split).
SPLIT_MAP = {"train": "train", "train_covost": "train", "dev": "dev", "test": "test"}
_JOINED = ("sentence", "client_id")


@dataclass
class _LanguageFiles:
    """The CoVoST TSVs found for one source language."""

    full: Path | None = None  # covost_v2.<src>_en.tsv
    archive: Path | None = None  # covost_v2.<src>_en.tsv.tar.gz
    per_split: dict[str, Path] = field(default_factory=dict)  # split -> covost_v2.<src>_en.<s>.tsv


def discover(covost_dir: Path) -> dict[str, _LanguageFiles]:
    """CoVoST X→EN files in ``covost_dir`` by source-language code (unknown codes included)."""
    if not covost_dir.is_dir():
        raise DataError(covost_dir, "CoVoST folder not found")
    found: dict[str, _LanguageFiles] = {}
    for path in sorted(covost_dir.iterdir()):
        m = _NAME_RE.match(path.name)
        if m is None or not path.is_file():
            continue
        files = found.setdefault(m["src"], _LanguageFiles())
        if m["tar"] and m["split"] is None:
            files.archive = path
        elif m["tar"]:
            continue
        elif m["split"] is None:
            files.full = path
        else:
            files.per_split[m["split"]] = path
    return found


def _select(
    found: dict[str, _LanguageFiles],
    languages: Sequence[str] | None,
    covost_dir: Path,
    policy: SkipPolicy,
) -> list[str]:
    if not found:
        raise DataError(
            covost_dir,
            "no CoVoST-2 X→EN TSV found (expected covost_v2.<src>_en.tsv,"
            " covost_v2.<src>_en.tsv.tar.gz or covost_v2.<src>_en.<split>.tsv)",
        )
    if languages:
        unknown = [lang for lang in languages if lang not in COVOST_CODES]
        if unknown:
            raise DataError(
                covost_dir,
                f"unknown CoVoST-2 source language(s) {', '.join(unknown)};"
                f" valid: {' '.join(COVOST_CODES)}",
            )
        absent = [lang for lang in languages if lang not in found]
        if absent:
            raise DataError(
                covost_dir,
                f"no covost_v2.<src>_en TSV for {', '.join(absent)};"
                f" languages found: {' '.join(sorted(found)) or 'none'}",
            )
        return list(languages)
    for code, files in found.items():
        if code not in COVOST_CODES:
            path = files.full or files.archive or next(iter(files.per_split.values()))
            detail = f"unknown CoVoST-2 source language {code!r} in the file name"
            policy.skip(SkipReason.UNKNOWN_LANGUAGE, path, None, detail)
    return [code for code in COVOST_CODES if code in found]


def _unpack(archive: Path, dest_dir: Path) -> Path:
    """Extract the one TSV of a released ``.tsv.tar.gz`` (only that member, by its base name)."""
    name = archive.name.removesuffix(".tar.gz")
    dest = dest_dir / name
    try:
        with tarfile.open(archive, "r:gz") as tar:
            member = next((m for m in tar.getmembers() if Path(m.name).name == name), None)
            fh = tar.extractfile(member) if member is not None and member.isfile() else None
            if fh is None:
                raise DataError(archive, f"archive has no file {name}")
            data = fh.read()
            atomic_write(dest, lambda tmp: tmp.write_bytes(data), point="covost2.tsv")
    except (tarfile.TarError, OSError, EOFError) as err:
        raise DataError(archive, f"cannot read archive ({err})") from None
    return dest


def _sources(lang: str, files: _LanguageFiles, out_dir: Path) -> list[tuple[Path, str | None]]:
    """(TSV, fixed split or None when the file has a ``split`` column) to read for ``lang``."""
    full = files.full
    if full is None and files.archive is not None:
        full = _unpack(files.archive, out_dir / "covost_tsv")
    if full is not None:
        if files.per_split:
            log.info("%s: reading %s; per-split files ignored", lang, full.name)
        return [(full, None)]
    return [(files.per_split[s], s) for s in ("train", "dev", "test") if s in files.per_split]


def clips_for(clips_dir: Path, lang: str) -> Path:
    """``clips_dir/<lang>/clips`` when ``clips_dir`` is a Common Voice root, else ``clips_dir``."""
    nested = clips_dir / lang / "clips"
    return nested if nested.is_dir() else clips_dir


def _validated_index(
    validated: Path, covost_tsv: Path, columns: Sequence[str], policy: SkipPolicy
) -> dict[str, dict[str, str]]:
    """``path`` -> the ``columns`` of Common Voice's validated.tsv."""
    if not validated.is_file():
        raise DataError(
            covost_tsv,
            f"has no column(s) {', '.join(columns)}, and {validated} (the Common Voice"
            " validated.tsv beside the clips folder, joined on path) does not exist",
        )
    rows = iter_tsv(validated, ["path", *columns], on_bad_row=policy.bad_row)
    return {r.fields["path"]: {c: r.fields[c] for c in columns} for r in rows}


def _rows(
    tsv: Path,
    fixed_split: str | None,
    lang: str,
    clips: Path,
    policy: SkipPolicy,
    joined: dict[Path, dict[str, dict[str, str]]],
) -> Iterator[Candidate]:
    """Candidates from one CoVoST TSV (joined with validated.tsv where columns are missing)."""
    columns = tsv_columns(tsv)
    to_join = [c for c in _JOINED if c not in columns]
    validated = clips.parent / "validated.tsv"
    if to_join and validated not in joined:
        joined[validated] = _validated_index(validated, tsv, _JOINED, policy)
    required = ["path", "translation"] if fixed_split else ["path", "translation", "split"]
    policy.report.sources.append(str(tsv))
    for row in iter_tsv(tsv, required, on_bad_row=policy.bad_row):
        f = row.fields
        split = fixed_split or SPLIT_MAP.get(f["split"])
        if split is None:
            detail = f"split {f['split']!r} is not imported"
            policy.skip(SkipReason.OTHER_SPLIT, tsv, row.line, detail)
            continue
        if to_join:
            extra = joined[validated].get(f["path"])
            if extra is None:
                detail = f"{f['path']} is not in {validated}"
                policy.skip(SkipReason.NOT_IN_VALIDATED, tsv, row.line, detail)
                continue
            f = {**extra, **f}
        yield Candidate(
            id=Path(f["path"]).stem,
            audio=resolve_clip(clips, f["path"]),
            language=lang,
            source_text=f["sentence"].strip(),
            target_text=f["translation"].strip(),
            speaker=f["client_id"],
            split=split,
            source=str(tsv),
            line=row.line,
        )


def import_covost2(
    covost_dir: str | Path,
    clips_dir: str | Path,
    out_dir: str | Path,
    languages: Sequence[str] | None = None,
    options: ImportOptions | None = None,
) -> ImportReport:
    """Import CoVoST-2 X→EN into ``out_dir/<split>/<lang>.jsonl`` + ``import_report.json``.

    ``languages``: CoVoST codes to import (default: every one with a TSV in ``covost_dir``).
    Audio paths in the manifests are absolute. Raises :class:`DataError` for unusable inputs
    (and, with ``options.strict``, at the first bad row or clip, naming ``file:line``).
    """
    options = options or ImportOptions()
    covost, clips_root, out = Path(covost_dir), Path(clips_dir), Path(out_dir)
    if not clips_root.is_dir():
        raise DataError(clips_root, "clips folder not found")
    report = ImportReport("covost2", options=asdict(options))
    policy = SkipPolicy(report, options.strict)
    found = discover(covost)
    selected = _select(found, languages, covost, policy)
    joined: dict[Path, dict[str, dict[str, str]]] = {}

    def candidates() -> Iterator[Candidate]:
        for lang in selected:
            clips = clips_for(clips_root, lang)
            for tsv, split in _sources(lang, found[lang], out):
                yield from _rows(tsv, split, lang, clips, policy, joined)
            joined.clear()  # one language's validated.tsv at a time in memory

    checked = filter_text(candidates(), policy, require_target=True)
    utterances = probe_candidates(checked, options, policy, desc="covost2 audio")
    write_manifests(out, utterances, report, selected)
    return report
