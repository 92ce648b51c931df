"""A Common Voice release folder of one language → ``OUT/<split>/<lang>.jsonl`` (ASR data).

``cv-corpus-N/<lang>/`` holds ``train.tsv dev.tsv test.tsv validated.tsv`` (columns include
``client_id path sentence``) and ``clips/*.mp3``. Any language works; the code (the folder name
unless given) must have the Common Voice format (``fr``, ``ga-IE``, ``zh-CN``, ``yue``).
Manifests get ``target_text=""``.

``train_from_validated``: Common Voice's own ``train.tsv`` keeps few recordings per sentence, so
``validated.tsv`` holds far more audio. With this option train is ``validated.tsv`` minus every
row that shares a clip, a speaker (``client_id``) or a sentence with ``dev.tsv`` or ``test.tsv``,
so dev and test stay unseen, as in the official splits; the rows left out are counted as
``dev_test_overlap``. Use it for distillation or CTC data, not to compare with published
Common Voice train-split numbers.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict
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
from samu_st.data.tsv import iter_tsv
from samu_st.errors import DataError

CV_SPLITS = ("train", "dev", "test")


def _held_out(lang_dir: Path) -> tuple[set[str], set[str], set[str]]:
    """Clips, speakers and sentences of dev.tsv and test.tsv."""
    paths: set[str] = set()
    speakers: set[str] = set()
    sentences: set[str] = set()
    for name in ("dev.tsv", "test.tsv"):
        tsv = lang_dir / name
        if not tsv.is_file():
            raise DataError(
                tsv, "not found; needed to keep dev/test out of a validated-based train"
            )
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
    lang: str,
    clips: Path,
    policy: SkipPolicy,
    held_out: tuple[set[str], set[str], set[str]] | None = None,
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
            language=lang,
            source_text=sentence,
            target_text="",
            speaker=speaker,
            split=split,
            source=str(tsv),
            line=row.line,
        )


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

    ``language`` defaults to the folder name. Audio paths in the manifests are absolute.
    Raises :class:`DataError` for unusable inputs (and, with ``options.strict``, at the first
    bad row or clip, naming ``file:line``).
    """
    options = options or ImportOptions()
    lang_dir, out = Path(cv_lang_dir), Path(out_dir)
    if not lang_dir.is_dir():
        raise DataError(lang_dir, "Common Voice language folder not found")
    lang = check_language_code(language or lang_dir.name, lang_dir)
    clips = lang_dir / "clips"
    if not clips.is_dir():
        raise DataError(clips, "clips folder not found")
    unknown = [s for s in splits if s not in CV_SPLITS]
    if unknown:
        raise DataError(lang_dir, f"unknown split(s) {', '.join(unknown)}; choose from {CV_SPLITS}")
    report = ImportReport("commonvoice", options=asdict(options))
    policy = SkipPolicy(report, options.strict)
    use_validated = train_from_validated and "train" in splits
    files = {s: lang_dir / f"{s}.tsv" for s in splits}
    if use_validated:
        files["train"] = lang_dir / "validated.tsv"
    for tsv in files.values():
        if not tsv.is_file():
            raise DataError(tsv, "TSV file not found")
    held_out = _held_out(lang_dir) if use_validated else None

    def candidates() -> Iterator[Candidate]:
        for split, tsv in files.items():
            extra = held_out if split == "train" else None
            yield from _rows(tsv, split, lang, clips, policy, extra)

    checked = filter_text(candidates(), policy)
    utterances = probe_candidates(checked, options, policy, desc=f"commonvoice {lang} audio")
    write_manifests(out, utterances, report, [lang])
    return report
