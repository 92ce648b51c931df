"""``OUT/import_report.json`` shared by several imports into one output folder.

Step 2 imports one Common Voice folder per language into the same folder, and a CoVoST-2 import
may later re-import one language: each import adds (or replaces) its own entry under
``imports``, keyed by the languages it covered, so nothing an earlier import reported is lost.
An earlier entry that shares languages with a new one loses those languages' kept counts and
manifests (the new import rewrote them); its skip counts cannot be split by language and stay,
with a note. The top level repeats the one-import schema (``kept``, ``hours``, ``skipped``,
``total_kept`` ...) summed over the entries, so readers of a single import's report need no
change. The file is rewritten atomically under a lock, so concurrent imports do not race.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FORMAT = 2  # 1: one import's report at the top level, no ``imports`` (read as one entry)
MAX_EXAMPLES = 5  # skipped rows quoted per reason in the totals

Report = dict[str, Any]


def entry_languages(report: Report) -> list[str]:
    """The languages an import covered (its ``languages``, else those it kept)."""
    langs = report.get("languages") or {x for v in report.get("kept", {}).values() for x in v}
    return sorted(langs)


def entry_key(report: Report) -> str:
    return ",".join(entry_languages(report)) or report.get("corpus", "import")


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock beside ``path`` (a no-op where fcntl does not exist)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with (path.parent / f".{path.name}.lock").open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _read_entries(path: Path) -> dict[str, Report]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        # Keep the unreadable file for a person to look at instead of overwriting it.
        aside = path.with_name(f"{path.stem}.unreadable{path.suffix}")
        os.replace(path, aside)
        log.warning("%s is not a readable report (%s); moved to %s", path, err, aside)
        return {}
    if not isinstance(data, dict):
        return {}
    if isinstance(data.get("imports"), dict):
        return dict(data["imports"])
    return {entry_key(data): data} if "corpus" in data else {}


def _drop_languages(entry: Report, langs: set[str]) -> Report | None:
    """``entry`` without ``langs`` (re-imported since); None when nothing of it is left."""
    left = [x for x in entry_languages(entry) if x not in langs]
    if not left:
        return None
    out = dict(entry)
    out["languages"] = left
    for name in ("kept", "hours"):
        by_split = {
            s: {x: n for x, n in v.items() if x not in langs}
            for s, v in entry.get(name, {}).items()
        }
        out[name] = {s: v for s, v in by_split.items() if v}
    out["manifests"] = [m for m in entry.get("manifests", []) if Path(m).stem not in langs]
    out["total_kept"] = sum(n for v in out["kept"].values() for n in v.values())
    out["total_hours"] = round(sum(h for v in out["hours"].values() for h in v.values()), 6)
    gone = ", ".join(sorted(langs & set(entry_languages(entry))))
    out["notes"] = [*entry.get("notes", []), f"re-imported later: {gone}; skip counts include it"]
    return out


def merge_entry(entries: dict[str, Report], report: Report) -> dict[str, Report]:
    """``entries`` with ``report`` added; earlier entries sharing its languages are trimmed."""
    langs = set(entry_languages(report))
    merged: dict[str, Report] = {}
    for entry in entries.values():
        trimmed = _drop_languages(entry, langs) if langs else entry
        if trimmed is not None:
            merged[entry_key(trimmed)] = trimmed
    merged[entry_key(report)] = report
    return dict(sorted(merged.items()))


def _sum_counts(entries: list[Report], name: str) -> dict[str, int]:
    total: dict[str, int] = {}
    for e in entries:
        for k, n in e.get(name, {}).items():
            total[k] = total.get(k, 0) + n
    return total


def totals(entries: dict[str, Report], latest: Report) -> Report:
    """The one-import schema summed over ``entries`` (languages are disjoint between them)."""
    es = list(entries.values())
    kept: dict[str, dict[str, int]] = {}
    hours: dict[str, dict[str, float]] = {}
    examples: dict[str, list[str]] = {}
    for e in es:
        for s, v in e.get("kept", {}).items():
            kept.setdefault(s, {}).update(v)
        for s, v in e.get("hours", {}).items():
            hours.setdefault(s, {}).update(v)
        for reason, quoted in e.get("examples", {}).items():
            examples.setdefault(reason, []).extend(quoted)
    skipped = _sum_counts(es, "skipped")
    return {
        "format": FORMAT,
        "corpus": "+".join(sorted({e.get("corpus", "") for e in es})),
        "options": latest.get("options", {}),
        "languages": sorted({x for e in es for x in entry_languages(e)}),
        "sources": list(dict.fromkeys(s for e in es for s in e.get("sources", []))),
        "kept": {s: dict(sorted(v.items())) for s, v in kept.items()},
        "hours": hours,
        "skipped": skipped,
        "excluded": _sum_counts(es, "excluded"),
        "examples": {k: v[:MAX_EXAMPLES] for k, v in examples.items()},
        "manifests": [m for e in es for m in e.get("manifests", [])],
        "notes": [n for e in es for n in e.get("notes", [])],
        "total_kept": sum(n for v in kept.values() for n in v.values()),
        "total_skipped": sum(skipped.values()),
        "total_hours": round(sum(h for v in hours.values() for h in v.values()), 6),
        "imports": entries,
    }


def _write_json(path: Path, data: Report) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n", "utf-8")
    os.replace(tmp, path)


def write_report(path: Path, report: Report, *, merge: bool = True) -> Path:
    """Write ``report`` to ``path``; with ``merge``, as one entry of the file already there."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not merge:
        _write_json(path, report)
        return path
    with _locked(path):
        entries = merge_entry(_read_entries(path), report)
        _write_json(path, totals(entries, report))
    return path
