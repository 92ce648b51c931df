"""A Common Voice release folder of one language → ``OUT/<split>/<lang>.jsonl`` (ASR data).

``cv-corpus-N/<lang>/`` holds ``validated.tsv`` and, in a full release, ``train.tsv dev.tsv
test.tsv`` (columns include ``client_id path sentence locale``) and ``clips/*.mp3``. Manifests
get ``target_text=""``.

Languages: each row is labelled with its ``locale`` column (a release folder renamed ``cv``
still labels French clips ``fr``; a TSV mixing locales gives one manifest per locale), falling
back to the folder name for rows without one; a locale that differs from the folder name is
logged and noted in the report. ``language=`` (``--language``) overrides both. Codes must have
the Common Voice format (``fr``, ``ga-IE``, ``zh-CN``, ``yue``).

``train_from_validated``: Common Voice's own ``train.tsv`` keeps few recordings per sentence, so
``validated.tsv`` holds far more audio. With this option train is ``validated.tsv`` minus every
row that shares a clip, a speaker (``client_id``) or a sentence with ``dev.tsv`` or ``test.tsv``,
so dev and test stay unseen, as in the official splits; the rows left out are counted as
``dev_test_overlap``. Use it for distillation or CTC data, not to compare with published
Common Voice train-split numbers. A folder holding only ``validated.tsv`` (what CoVoST-2 points
into) is imported this way: all of it goes to train.

A dev or test TSV that does not exist is no error: that split is left out, logged, and noted in
the report. A missing train TSV is an error (it names ``--train-from-validated`` when the folder
has ``validated.tsv``).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from samu_st.data.importers.common import (
    Candidate,
    ImportOptions,
    ImportReport,
    SkipPolicy,
    SkipReason,
    check_language_code,
    filter_text,
    probe_candidates,
    resolve_clip,
    write_manifests,
)
from samu_st.data.manifest import LANGUAGE_CODE_RE
from samu_st.data.tsv import TsvRow, iter_tsv
from samu_st.errors import DataError

log = logging.getLogger(__name__)

CV_SPLITS = ("train", "dev", "test")
HeldOut = tuple[set[str], set[str], set[str]]  # clips, speakers, sentences of dev and test


@dataclass
class _Labeller:
    """The language of each row: ``explicit`` if given, else its locale, else the folder name."""

    folder: str  # the language folder's name
    explicit: str | None  # language= / --language
    checked: set[str] = field(default_factory=set)  # codes whose format was checked
    seen: set[str] = field(default_factory=set)  # labels given
    differing: Counter[tuple[str, str]] = field(default_factory=Counter)  # (tsv, locale) -> rows

    def __call__(self, tsv: Path, row: TsvRow) -> str:
        locale = row.fields.get("locale", "").strip()
        label = self.explicit or locale or self.folder
        if label not in self.checked:
            if label == locale and not LANGUAGE_CODE_RE.match(label):
                raise DataError(
                    tsv,
                    f"unknown language code {label!r} in the locale column: expected a Common"
                    " Voice code such as 'fr', 'zh-CN', 'ga-IE' (pass the language explicitly)",
                    row.line,
                )
            check_language_code(label, tsv.parent)
            self.checked.add(label)
        if locale and locale != (self.explicit or self.folder):
            if not self.differing[(str(tsv), locale)]:
                log.warning("%s:%d: locale %r, folder %r: labelled %r", tsv, row.line, locale,
                            self.folder, label)  # fmt: skip
            self.differing[(str(tsv), locale)] += 1
        self.seen.add(label)
        return label

    def notes(self) -> list[str]:
        why = "relabelled as asked" if self.explicit else "labelled by its locale"
        return [
            f"{n} row(s) of {tsv} have locale {locale!r}, not {self.explicit or self.folder!r}"
            f" ({why})"
            for (tsv, locale), n in sorted(self.differing.items())
        ]


def _held_out(tsvs: Sequence[Path]) -> HeldOut:
    """Clips, speakers and sentences of the dev and test TSVs."""
    paths: set[str] = set()
    speakers: set[str] = set()
    sentences: set[str] = set()
    for tsv in tsvs:
        # A malformed dev/test row is counted (or raised) when that split itself is imported.
        for row in iter_tsv(tsv, ["path", "sentence"], on_bad_row=lambda err: None):
            paths.add(row.fields["path"])
            sentences.add(row.fields["sentence"].strip())
            if row.fields.get("client_id"):
                speakers.add(row.fields["client_id"])
    return paths, speakers, sentences


def _rows(
    tsv: Path,
    split: str,
    label: _Labeller,
    clips: Path,
    policy: SkipPolicy,
    held_out: HeldOut | None = None,
) -> Iterator[Candidate]:
    """Candidates from one Common Voice TSV; ``held_out`` rows are excluded and counted."""
    policy.report.sources.append(str(tsv))
    for row in iter_tsv(tsv, ["path", "sentence"], on_bad_row=policy.bad_row):
        f = row.fields
        sentence, speaker = f["sentence"].strip(), f.get("client_id", "")
        if held_out is not None and (
            f["path"] in held_out[0] or speaker in held_out[1] or sentence in held_out[2]
        ):
            detail = f"{f['path']} shares its clip, speaker or sentence with dev/test"
            policy.skip(SkipReason.DEV_TEST_OVERLAP, tsv, row.line, detail)
            continue
        yield Candidate(
            id=Path(f["path"]).stem,
            audio=resolve_clip(clips, f["path"]),
            language=label(tsv, row),
            source_text=sentence,
            target_text="",
            speaker=speaker,
            split=split,
            source=str(tsv),
            line=row.line,
        )


def _split_files(
    lang_dir: Path, splits: Sequence[str], from_validated: bool
) -> tuple[dict[str, Path], list[Path]]:
    """The TSV of each requested split that exists, and the dev/test TSVs that do not."""
    files: dict[str, Path] = {}
    absent: list[Path] = []
    for split in splits:
        name = "validated.tsv" if split == "train" and from_validated else f"{split}.tsv"
        tsv = lang_dir / name
        if tsv.is_file():
            files[split] = tsv
        elif split == "train":
            hint = ""
            if not from_validated and (lang_dir / "validated.tsv").is_file():
                hint = "; the folder has validated.tsv: import it with --train-from-validated"
            raise DataError(tsv, f"TSV file not found{hint}")
        else:
            absent.append(tsv)
    if not files:
        raise DataError(lang_dir, f"none of the TSVs of the split(s) {', '.join(splits)} exists")
    return files, absent


def _note_absent(lang_dir: Path, absent: list[Path], held: list[Path], from_validated: bool) -> str:
    """One line on the dev/test TSVs that do not exist (what CoVoST's folders look like)."""
    names = " and ".join(p.name for p in absent)
    note = f"{lang_dir}: no {names}, so no {'/'.join(p.stem for p in absent)} split"
    if from_validated and not held:
        note += "; all of validated.tsv is train"
    log.warning("%s", note)
    return note


def import_commonvoice(
    cv_lang_dir: str | Path,
    out_dir: str | Path,
    language: str | None = None,
    splits: Sequence[str] = CV_SPLITS,
    *,
    train_from_validated: bool = False,
    options: ImportOptions | None = None,
) -> ImportReport:
    """Import one Common Voice language folder into ``out_dir/<split>/<language>.jsonl``.

    Rows are labelled by their ``locale`` column, else the folder name; ``language`` overrides
    both. Audio paths in the manifests are absolute. Raises :class:`DataError` for unusable
    inputs (and, with ``options.strict``, at the first bad row or clip, naming ``file:line``).
    """
    options = options or ImportOptions()
    lang_dir, out = Path(cv_lang_dir), Path(out_dir)
    if not lang_dir.is_dir():
        raise DataError(lang_dir, "Common Voice language folder not found")
    if language is not None:
        check_language_code(language, lang_dir)
    clips = lang_dir / "clips"
    if not clips.is_dir():
        raise DataError(clips, "clips folder not found")
    unknown = [s for s in splits if s not in CV_SPLITS]
    if unknown:
        raise DataError(lang_dir, f"unknown split(s) {', '.join(unknown)}; choose from {CV_SPLITS}")
    report = ImportReport("commonvoice", options=asdict(options))
    policy = SkipPolicy(report, options.strict)
    use_validated = train_from_validated and "train" in splits
    files, absent = _split_files(lang_dir, splits, use_validated)
    # validated.tsv rows sharing anything with whichever of dev/test exist stay out of train.
    held = [p for p in (lang_dir / "dev.tsv", lang_dir / "test.tsv") if p.is_file()]
    if absent:
        report.notes.append(_note_absent(lang_dir, absent, held, use_validated))
    held_out = _held_out(held) if use_validated else None
    label = _Labeller(lang_dir.name, language)

    def candidates() -> Iterator[Candidate]:
        for split, tsv in files.items():
            extra = held_out if split == "train" else None
            yield from _rows(tsv, split, label, clips, policy, extra)

    checked = filter_text(candidates(), policy)
    utterances = probe_candidates(checked, options, policy, desc=f"commonvoice {lang_dir.name}")
    report.notes.extend(label.notes())
    write_manifests(out, utterances, report, sorted(label.seen))
    return report
