"""The ``samu-st`` command line: a thin layer over the library.

Each command group lives in its own ``cli/cmd_*.py`` module exposing
``register(subparsers) -> None``; the parser is assembled from them at run time, so adding a
command never touches this file.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
from collections.abc import Sequence

from samu_st import __version__
from samu_st.errors import SamuError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="samu-st",
        description="Cross-lingual transfer for low-resource speech translation and recognition.",
    )
    parser.add_argument("--version", action="version", version=f"samu-st {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    package = importlib.import_module(__name__)
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if info.name.startswith("cmd_"):
            importlib.import_module(f"{__name__}.{info.name}").register(sub)
    _in_workflow_order(sub)
    return parser


# `samu-st --help` lists commands as a user meets them: the whole job, data, the three steps
# and the baselines, then using and inspecting models. Unlisted commands come last, by name.
WORKFLOW = (
    "demo", "pipeline", "prepare", "data", "release", "pretrain", "distill",
    "pretrain-text", "train-st", "train-ctc", "evaluate", "translate", "transcribe", "cascade",
    "export", "report", "model-summary", "probe",
)  # fmt: skip


def _in_workflow_order(sub: argparse._SubParsersAction) -> None:
    rank = {name: i for i, name in enumerate(WORKFLOW)}
    # argparse prints the help lines in the order of this (private but stable) list
    sub._choices_actions.sort(key=lambda a: (rank.get(a.dest, len(rank)), a.dest))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except SamuError as err:
        print(f"samu-st: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("samu-st: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
