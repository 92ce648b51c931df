"""``samu-st export``: a step-3 translator folder → a Hugging Face folder with a model card."""

from __future__ import annotations

import argparse
import shlex


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="write a Hugging Face folder (pipeline-ready, with a model card) of a translator",
        description="Export a step-3 translator folder (out_dir/final) for transformers: "
        "weights, preprocessor_config.json, tokenizer, a generation_config.json forcing the "
        "decoder prefix of one language, and README.md with the model-index. Folders of -A "
        "models (bottleneck adapters) load after `import samu_st`; plain transformers "
        "refuses them.",
    )
    parser.add_argument("model", help="translator folder written by train-st (…/final)")
    parser.add_argument("--out", required=True, help="folder to write (replaced if it exists)")
    parser.add_argument(
        "--language", help="source language of generation_config.json (default: the first)"
    )
    parser.add_argument("--results", help="results.json of `samu-st evaluate`, for the card")
    parser.add_argument("--beams", type=int, default=5, help="beam size of generation_config")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from samu_st.export.folder import ExportOptions, export_translator

    options = ExportOptions(
        language=args.language,
        num_beams=args.beams,
        results=args.results,
        command=_command(args),
    )
    out = export_translator(args.model, args.out, options)
    print(f"exported to {out}")
    return 0


def _command(args: argparse.Namespace) -> str:
    words = ["samu-st", "export", args.model, "--out", args.out, "--beams", str(args.beams)]
    for flag, value in (("--language", args.language), ("--results", args.results)):
        if value is not None:
            words += [flag, value]
    return shlex.join(words)
