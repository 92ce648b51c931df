"""``samu-st evaluate | translate | transcribe``: score a model, or decode audio and manifests."""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from samu_st.decoding.translate import DecodeOptions


def _decoding_options(parser: argparse.ArgumentParser, beam: bool) -> None:
    if beam:
        parser.add_argument(
            "--beam", type=int, default=5, metavar="N", help="beam size; 1 = greedy"
        )
        parser.add_argument(
            "--length-penalty", type=float, default=1.0, help="beam length penalty exponent"
        )
        parser.add_argument(
            "--max-new-tokens", type=int, default=200, metavar="N", help="output length cap"
        )
        parser.add_argument(
            "--engine",
            choices=("samu", "generate"),
            default="samu",
            help="beam search: samu_st.decoding.beam (same hypotheses, faster) or transformers' "
            "generate() (default: %(default)s)",
        )
        parser.add_argument(
            "--bf16", action="store_true", help="decode under bf16 autocast (CPU with bf16, GPU)"
        )
    parser.add_argument(
        "--batch-seconds",
        type=float,
        default=120.0,
        metavar="S",
        help="seconds of padded audio per batch (default: %(default)s)",
    )
    parser.add_argument(
        "--batch-size", type=int, default=32, metavar="N", help="utterances per batch at most"
    )
    parser.add_argument("--device", default=None, help="torch device (default: cuda if present)")
    parser.add_argument(
        "--skip-bad",
        action="store_true",
        help="skip unreadable audio (and report the count) instead of stopping with an error",
    )


def _decode(args: argparse.Namespace) -> DecodeOptions:
    from samu_st.decoding.translate import DecodeOptions

    return DecodeOptions(
        num_beams=getattr(args, "beam", 1),
        length_penalty=getattr(args, "length_penalty", 1.0),
        max_new_tokens=getattr(args, "max_new_tokens", 200),
        engine=getattr(args, "engine", "generate"),
        bf16=getattr(args, "bf16", False),
        max_duration=args.batch_seconds,
        max_batch_size=args.batch_size,
    )


def _device(args: argparse.Namespace) -> str:
    import torch

    return args.device or ("cuda" if torch.cuda.is_available() else "cpu")


def register(subparsers: argparse._SubParsersAction) -> None:
    ev = subparsers.add_parser(
        "evaluate",
        help="BLEU (translator) or WER/CER (CTC model) per language and resource group",
        description="Decode every MANIFEST_DIR/<split>/<lang>.jsonl with MODEL (a translator "
        "folder: beam search, sacrebleu BLEU 13a; a CTC folder: WER/CER after the model's text "
        "normaliser) and write results.json, results.md, plots and hypotheses.jsonl to --out.",
    )
    ev.add_argument("model", type=Path, metavar="MODEL", help="translator or CTC model folder")
    ev.add_argument("manifest_dir", type=Path, metavar="MANIFEST_DIR")
    ev.add_argument("--out", type=Path, required=True, help="output folder")
    ev.add_argument("--split", default="test", help="split subfolder (default: %(default)s)")
    ev.add_argument("--name", default=None, help="model name in tables (default: folder name)")
    ev.add_argument("--max-utterances", type=int, default=None, metavar="N", help="per language")
    ev.add_argument("--languages", nargs="+", default=(), metavar="L", help="only these")
    ev.add_argument("--lm", default=None, metavar="ARPA", help="CTC: n-gram LM beam search")
    _decoding_options(ev, beam=True)
    ev.set_defaults(func=run_evaluate)

    tr = subparsers.add_parser(
        "translate",
        help="translate audio files or manifests with a translator folder",
        description="Batched beam search; prints id, hypothesis (and reference when known) as "
        "TSV or JSON lines. Raw audio files need --language (manifests carry it).",
    )
    _io_options(tr)
    tr.add_argument(
        "--language",
        type=_source_language,
        default=None,
        help="source language of raw audio files: a CoVoST-2 code (fr, zh-CN, sv-SE) or its "
        "MBART-50 code (fr_XX, zh_CN, sv_SE)",
    )
    _decoding_options(tr, beam=True)
    tr.set_defaults(func=run_translate)

    ts = subparsers.add_parser(
        "transcribe",
        help="transcribe audio files or manifests with a CTC model folder",
        description="Batched CTC decoding (greedy, or beam search with --lm ARPA); prints id, "
        "hypothesis (and reference when known) as TSV or JSON lines.",
    )
    _io_options(ts)
    ts.add_argument("--lm", default=None, metavar="ARPA", help="n-gram LM for beam search")
    _decoding_options(ts, beam=False)
    ts.set_defaults(func=run_transcribe)


def _source_language(value: str) -> str:
    """argparse type: an unknown code is a usage error (exit 2) listing the valid ones."""
    from samu_st.models.tokenizer import source_language

    try:
        return source_language(value)
    except KeyError as err:
        raise argparse.ArgumentTypeError(str(err.args[0])) from None


def _io_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=Path, metavar="MODEL", help="model folder")
    parser.add_argument("inputs", nargs="+", metavar="AUDIO_OR_MANIFEST", help="files")
    parser.add_argument("--format", choices=("tsv", "jsonl"), default="tsv", help="output format")
    parser.add_argument("--out", type=Path, default=None, metavar="FILE", help="default: stdout")


@contextlib.contextmanager
def _output(path: Path | None) -> Iterator[IO[str]]:
    if path is None:
        yield sys.stdout
        return
    from samu_st.atomic import write_text_atomic

    buffer = io.StringIO()  # written atomically once complete
    yield buffer
    write_text_atomic(path, buffer.getvalue(), point="translations")


def run_evaluate(args: argparse.Namespace) -> int:
    from samu_st.evaluate import EvalOptions, evaluate_model
    from samu_st.report import TranslationResults, results_markdown

    options = EvalOptions(
        split=args.split,
        name=args.name,
        max_utterances=args.max_utterances,
        languages=tuple(args.languages),
        decode=_decode(args),
        lm=args.lm,
        device=_device(args),
        progress=sys.stderr.isatty(),
        skip_bad=args.skip_bad,
    )
    results = evaluate_model(args.model, args.manifest_dir, args.out, options)
    print(results_markdown(results))
    if isinstance(results, TranslationResults):
        print(f"sacrebleu signature: {results.sacrebleu_signature}")
    print(f"written to {args.out}")
    return 0


def _require_kind(model: Path, kind: str, other: str) -> None:
    from samu_st.errors import ModelLoadError
    from samu_st.evaluate import model_kind

    if model_kind(model) != kind:
        raise ModelLoadError(f"{model}: not a {kind} model folder; use `samu-st {other}`")


def _finish(rows: list, skipped: list, args: argparse.Namespace) -> int:
    from samu_st.evaluate import write_rows

    with _output(args.out) as handle:
        write_rows(rows, args.format, handle)
    if skipped:
        print(f"skipped {len(skipped)} unreadable clip(s):", file=sys.stderr)
        for item in skipped:
            print(f"  {item.reason}", file=sys.stderr)
    return 0


def run_translate(args: argparse.Namespace) -> int:
    from samu_st.decoding.translate import translate_utterances
    from samu_st.evaluate import collect_rows, utterances_from_inputs
    from samu_st.models.translator import load_translator

    _require_kind(args.model, "translator", "transcribe")
    utts, skipped = utterances_from_inputs(
        args.inputs, args.language, need_language=True, skip_bad=args.skip_bad
    )
    loaded = load_translator(args.model, _device(args))
    decoded = translate_utterances(
        loaded.model,
        loaded.tokenizer,
        utts,
        _decode(args),
        progress=sys.stderr.isatty(),
        skip_bad=args.skip_bad,
    )
    rows = collect_rows(utts, decoded, "target")
    return _finish(rows, skipped + decoded.skipped, args)


def run_transcribe(args: argparse.Namespace) -> int:
    from samu_st.evaluate import (
        CtcTranscriber,
        collect_rows,
        transcribe_utterances,
        utterances_from_inputs,
    )

    _require_kind(args.model, "ctc", "translate")
    utts, skipped = utterances_from_inputs(args.inputs, skip_bad=args.skip_bad)
    transcriber = CtcTranscriber(args.model, args.lm, _device(args))
    decoded = transcribe_utterances(
        transcriber, utts, _decode(args), progress=sys.stderr.isatty(), skip_bad=args.skip_bad
    )
    rows = collect_rows(utts, decoded, "source")
    return _finish(rows, skipped + decoded.skipped, args)
