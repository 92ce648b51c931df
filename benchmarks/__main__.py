"""``python -m benchmarks [--only NAME ...] [--quick] [--out FILE.jsonl]``: run the benchmarks,
print one JSON object per benchmark (one line each), optionally append them to a file."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
import traceback
import warnings
from pathlib import Path
from typing import Any

from benchmarks import BENCHMARKS

DEFAULT_WORK = Path("runs/bench")


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    p.add_argument(
        "--only",
        nargs="+",
        choices=sorted(BENCHMARKS),
        metavar="NAME",
        help=f"run only these ({', '.join(BENCHMARKS)})",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="tiny corpus and models: every benchmark in seconds (for tests)",
    )
    p.add_argument("--out", type=Path, help="also append the JSON lines to this file")
    p.add_argument(
        "--work",
        type=Path,
        default=DEFAULT_WORK,
        help="cache folder for corpora, tokenizers, models (default runs/bench)",
    )
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    p.add_argument(
        "--table",
        type=Path,
        metavar="FILE.jsonl",
        help="print the markdown results table of earlier runs' JSON lines and exit",
    )
    p.add_argument(
        "--model",
        type=Path,
        metavar="DIR",
        help="beam_search: a trained translator folder (default: the demo's samu-xlsr-A if "
        "runs/demo has it, else a briefly trained benchmark model)",
    )
    p.add_argument(
        "--gpu-only",
        action="store_true",
        help="paper_step: with a GPU, measure the GPU side only (skip the paper-size CPU "
        "update, minutes of a GPU machine's time)",
    )
    p.add_argument(
        "--isolate",
        choices=("auto", "yes", "no"),
        default="auto",
        help="run each training side in its own process (auto: not with --quick)",
    )
    return p.parse_args(argv)


def _failed(name: str, quick: bool, err: BaseException) -> dict[str, Any]:
    from benchmarks.common import Record

    rec = Record(name, quick).to_json()
    rec["error"] = f"{type(err).__name__}: {err}"
    return rec


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.table is not None:
        from benchmarks.table import table

        print(table(args.table))
        return 0
    import torch

    from benchmarks.corpus import Context

    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore")
    isolate = not args.quick if args.isolate == "auto" else args.isolate == "yes"
    model = args.model.resolve() if args.model is not None else None
    out = args.out.resolve() if args.out is not None else None
    ctx = Context(
        work=args.work.resolve(),
        quick=args.quick,
        isolate=isolate,
        beam_model=model,
        out=out,
        gpu_only=args.gpu_only,
    )
    names = args.only or list(BENCHMARKS)
    failures = 0
    for name in names:
        try:
            record = importlib.import_module(BENCHMARKS[name]).run(ctx).to_json()
        except Exception as err:  # one broken benchmark must not hide the others' results
            traceback.print_exc()
            record, failures = _failed(name, args.quick, err), failures + 1
        line = json.dumps(record)
        print(line, flush=True)
        if args.out is not None:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            with args.out.open("a", encoding="utf-8") as f:
                f.write(line + "\n")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
