"""``samu-st cascade translate | evaluate``: the cascade baseline of the paper's Table 4 (CTC
ASR, then MBART text MT of the transcript) outside the pipeline, over :mod:`samu_st.cascade`."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from samu_st.cli.cmd_eval import (
    _decode,
    _decoding_options,
    _device,
    _finish,
    _require_kind,
    _source_language,
)

if TYPE_CHECKING:
    from samu_st.evaluate import EvalOptions

LANGUAGE_HELP = "a CoVoST-2 code (fr, zh-CN, sv-SE) or its MBART-50 code (fr_XX, zh_CN, sv_SE)"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "cascade",
        help="the cascade baseline: CTC speech recognition, then MBART text translation",
        description="Transcribe with a CTC model folder (train-ctc), normalise the transcript "
        "with the model's text normaliser, translate it into English with an MBART text model "
        "folder (pretrain-text --objective translate, or a MBART-50 many-to-one folder).",
    )
    sub = parser.add_subparsers(dest="cascade_command", metavar="SUBCOMMAND", required=True)
    tr = sub.add_parser(
        "translate",
        help="translate audio files or manifests through the cascade",
        description="Prints id, translation (and reference when known) as TSV or JSON lines, "
        "one line per clip. Raw audio files need --language (manifests carry it).",
    )
    _models(tr)
    tr.add_argument("inputs", nargs="+", metavar="AUDIO_OR_MANIFEST", help="files")
    tr.add_argument(
        "--language",
        type=_source_language,
        default=None,
        help=f"source language of raw audio files: {LANGUAGE_HELP}",
    )
    tr.add_argument("--format", choices=("tsv", "jsonl"), default="tsv", help="output format")
    tr.add_argument("--out", type=Path, default=None, metavar="FILE", help="default: stdout")
    _search_options(tr)
    tr.set_defaults(func=run_cascade_translate)

    ev = sub.add_parser(
        "evaluate",
        help="BLEU of the cascade per language and resource group, and its ASR WER/CER",
        description="Run the cascade on every <split>/<lang>.jsonl of the manifest folders and "
        "write what the pipeline's cascade evaluation writes to --out: results.json and "
        "results.md (BLEU per language, group means, TRFGap), plots, hypotheses.jsonl (with "
        "each transcript), and asr/ (WER/CER of the transcripts).",
    )
    _models(ev)
    ev.add_argument(
        "--manifests",
        type=Path,
        nargs="+",
        required=True,
        metavar="DIR",
        help="manifest folder(s) holding <split>/<lang>.jsonl (as `samu-st prepare` writes)",
    )
    ev.add_argument("--out", type=Path, required=True, help="output folder")
    ev.add_argument("--split", default="test", help="split subfolder (default: %(default)s)")
    ev.add_argument("--name", default=None, help="name in tables (default: cascade)")
    ev.add_argument("--max-utterances", type=int, default=None, metavar="N", help="per language")
    ev.add_argument(
        "--languages", nargs="+", type=_source_language, default=(), metavar="L", help="only these"
    )
    _search_options(ev)
    ev.set_defaults(func=run_cascade_evaluate)


def _models(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--asr", type=Path, required=True, metavar="CTC_MODEL", help="CTC model folder"
    )
    parser.add_argument(
        "--mt", type=Path, required=True, metavar="MT_MODEL", help="MBART text MT folder"
    )
    parser.add_argument("--lm", default=None, metavar="ARPA", help="n-gram LM for CTC beam search")


def _search_options(parser: argparse.ArgumentParser) -> None:
    """MT beam search (the text model always searches with generate()) and audio batching."""
    parser.add_argument(
        "--beam",
        type=int,
        default=5,
        metavar="N",
        help="MT beam (default: %(default)s); 1 = greedy",
    )
    parser.add_argument(
        "--length-penalty", type=float, default=1.0, help="MT beam length penalty exponent"
    )
    parser.add_argument(
        "--max-new-tokens", type=int, default=200, metavar="N", help="MT output length cap"
    )
    _decoding_options(parser, beam=False)


def _options(args: argparse.Namespace) -> EvalOptions:
    from samu_st.evaluate import EvalOptions

    return EvalOptions(
        decode=_decode(args),
        lm=args.lm,
        device=_device(args),
        progress=sys.stderr.isatty(),
        skip_bad=args.skip_bad,
    )


def run_cascade_translate(args: argparse.Namespace) -> int:
    from samu_st.cascade import run_cascade
    from samu_st.evaluate import Row, utterances_from_inputs

    _require_kind(args.asr, "ctc", "translate")
    utts, skipped = utterances_from_inputs(
        args.inputs, args.language, need_language=True, skip_bad=args.skip_bad
    )
    run = run_cascade(args.asr, args.mt, utts, _options(args))
    rows = [
        Row(o.utterance.id, o.utterance.language, o.translation, o.utterance.target_text or None)
        for o in run.outputs
    ]
    return _finish(rows, skipped + run.skipped, args)


def run_cascade_evaluate(args: argparse.Namespace) -> int:
    from samu_st.cascade import ASR_DIR, evaluate_cascade
    from samu_st.report import load_results, results_markdown

    _require_kind(args.asr, "ctc", "evaluate")
    options = replace(
        _options(args),
        split=args.split,
        name=args.name,
        max_utterances=args.max_utterances,
        languages=tuple(args.languages),
    )
    results = evaluate_cascade(args.asr, args.mt, args.manifests, args.out, options)
    print(results_markdown(results))
    print(f"sacrebleu signature: {results.sacrebleu_signature}")
    print(results_markdown(load_results(args.out / ASR_DIR / "results.json")))
    print(f"written to {args.out}")
    return 0
