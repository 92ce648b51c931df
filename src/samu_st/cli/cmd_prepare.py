"""``samu-st prepare covost2|commonvoice|hf-disk|mini``: corpora → manifests + import report."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from samu_st.config import from_dict, load_config
from samu_st.data.importers import (
    ImportOptions,
    ImportReport,
    import_commonvoice,
    import_covost2,
    import_hf_disk,
)
from samu_st.data.importers.common import REPORT_NAME
from samu_st.errors import SamuError


def _import_options(parser: argparse.ArgumentParser) -> None:
    """Options every importer shares (see ImportOptions)."""
    default = ImportOptions()
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument(
        "--strict",
        action="store_true",
        help="stop at the first bad row or clip (error names file:line) instead of skipping it",
    )
    parser.add_argument(
        "--max-duration",
        type=float,
        default=default.max_duration,
        metavar="S",
        help="skip clips longer than S seconds; 0 = no limit (default: %(default)s)",
    )
    parser.add_argument(
        "--check-audio",
        action="store_true",
        help="decode every clip to find truncated and silent audio (slower; headers are"
        " always checked)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=default.workers,
        metavar="N",
        help="threads probing audio (default: %(default)s)",
    )


def _options(args: argparse.Namespace) -> ImportOptions:
    if args.workers < 1:
        raise SamuError(f"--workers must be at least 1, got {args.workers}")
    return ImportOptions(
        strict=args.strict,
        max_duration=args.max_duration if args.max_duration and args.max_duration > 0 else None,
        check_audio=args.check_audio,
        workers=args.workers,
    )


def _done(report: ImportReport, out: Path) -> int:
    print(
        f"{report.summary()} Manifests in {out}/<split>/<lang>.jsonl; report {out / REPORT_NAME}."
    )
    return 0


def _run_covost2(args: argparse.Namespace) -> int:
    report = import_covost2(
        args.covost_dir, args.clips_dir, args.out, languages=args.languages, options=_options(args)
    )
    return _done(report, args.out)


def _run_commonvoice(args: argparse.Namespace) -> int:
    report = import_commonvoice(
        args.cv_lang_dir,
        args.out,
        language=args.language,
        splits=args.splits,
        train_from_validated=args.train_from_validated,
        options=_options(args),
    )
    return _done(report, args.out)


def _run_hf_disk(args: argparse.Namespace) -> int:
    report = import_hf_disk(
        args.dataset_dir,
        args.out,
        args.language,
        text_column=args.text_column,
        target_column=args.target_column,
        speaker_column=args.speaker_column,
        audio_root=args.audio_root,
        options=_options(args),
    )
    return _done(report, args.out)


def _run_mini(args: argparse.Namespace) -> int:
    try:
        from samu_st.data.mini_covost import MiniCovostConfig, prepare_mini
    except ModuleNotFoundError as err:
        if err.name != "samu_st.data.mini_covost":
            raise
        raise SamuError("mini-CoVoST synthesis (samu_st.data.mini_covost) is missing") from None
    overrides = [f"seed={args.seed}"] if args.seed is not None else []
    if args.config is not None:
        cfg = load_config(MiniCovostConfig, args.config, overrides)
    else:
        data: dict[str, Any] = {"seed": args.seed} if args.seed is not None else {}
        cfg = from_dict(MiniCovostConfig, data)
    if args.workers < 1:
        raise SamuError(f"--workers must be at least 1, got {args.workers}")
    path = prepare_mini(args.out, cfg, workers=args.workers)
    print(f"mini-CoVoST ready in {path}")
    return 0


def _add_covost2(sub: Any) -> None:
    p = sub.add_parser(
        "covost2",
        help="CoVoST-2 X→EN TSVs + Common Voice clips",
        description="Import CoVoST-2 X→EN: covost_v2.<src>_en.tsv (or .tsv.tar.gz, or the"
        " per-split covost_v2.<src>_en.<split>.tsv) joined with Common Voice validated.tsv"
        " where sentence/client_id are missing. CLIPS_DIR is a Common Voice root with"
        " <lang>/clips/ or one clips folder.",
    )
    p.add_argument("covost_dir", type=Path, metavar="COVOST_DIR")
    p.add_argument("clips_dir", type=Path, metavar="CLIPS_DIR")
    p.add_argument("--languages", nargs="+", metavar="L", help="source languages (default: all)")
    _import_options(p)
    p.set_defaults(func=_run_covost2)


def _add_commonvoice(sub: Any) -> None:
    p = sub.add_parser(
        "commonvoice",
        help="one Common Voice language folder (ASR data)",
        description="Import cv-corpus-N/<lang>/ (train.tsv dev.tsv test.tsv or validated.tsv,"
        " clips/). Rows are labelled by their locale column, else the folder name. A dev or"
        " test TSV that does not exist is left out and noted. Several languages may be"
        " imported into one --out: import_report.json keeps an entry per language.",
    )
    p.add_argument("cv_lang_dir", type=Path, metavar="CV_LANG_DIR")
    p.add_argument(
        "--language",
        help="label every row with this code (default: each row's locale, else the folder name)",
    )
    p.add_argument("--splits", nargs="+", default=["train", "dev", "test"], metavar="SPLIT")
    p.add_argument(
        "--train-from-validated",
        action="store_true",
        help="train = validated.tsv minus rows sharing a clip, speaker or sentence with"
        " dev/test (more data for distillation or CTC); a folder holding only validated.tsv"
        " goes to train whole",
    )
    _import_options(p)
    p.set_defaults(func=_run_commonvoice)


def _add_hf_disk(sub: Any) -> None:
    p = sub.add_parser(
        "hf-disk",
        help="a Hugging Face datasets folder saved with save_to_disk",
        description="Import a datasets folder (DatasetDict or Dataset) with an audio or path"
        " column; embedded audio is written as FLAC under OUT/audio/.",
    )
    p.add_argument("dataset_dir", type=Path, metavar="DATASET_DIR")
    p.add_argument("--language", required=True, help="source-language code, e.g. ga-IE")
    p.add_argument("--text-column", default="sentence", help="transcript column")
    p.add_argument("--target-column", default=None, help="translation column (optional)")
    p.add_argument("--speaker-column", default="client_id", help="speaker column, if present")
    p.add_argument("--audio-root", type=Path, default=None, help="base of relative audio paths")
    _import_options(p)
    p.set_defaults(func=_run_hf_disk)


def _add_mini(sub: Any) -> None:
    p = sub.add_parser(
        "mini",
        help="synthesise the embedded mini-CoVoST corpus with espeak-ng",
        description="Synthesise mini-CoVoST (deterministic from the seed, cached).",
    )
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--config", type=Path, default=None, help="MiniCovostConfig YAML")
    p.add_argument("--seed", type=int, default=None, help="override the config's seed")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, metavar="N")
    p.set_defaults(func=_run_mini)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "prepare",
        help="import a corpus into manifests, or synthesise mini-CoVoST",
        description="Write OUT/<split>/<lang>.jsonl manifests and OUT/import_report.json.",
    )
    sub = parser.add_subparsers(dest="corpus", metavar="CORPUS", required=True)
    from samu_st.cli.cmd_ctc import add_prepare_irish

    for add in (_add_covost2, _add_commonvoice, _add_hf_disk, _add_mini, add_prepare_irish):
        add(sub)
