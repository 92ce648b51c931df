"""``samu-st report RESULTS.json... --out DIR``: several models' results side by side."""

from __future__ import annotations

import argparse
from pathlib import Path

from samu_st.report import report


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report",
        help="put several results.json side by side (paper-style table, report.json, plot)",
        description="Combine results.json files written by `samu-st evaluate` into one "
        "Model | High | Mid | Low | TRFGap table (report.md), report.json and report.png.",
    )
    parser.add_argument("results", nargs="+", type=Path, metavar="RESULTS.json")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    parser.add_argument("--title", default=None, help="title of the table and the plot")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    paths = report(args.results, args.out, title=args.title)
    print(paths["md"].read_text(encoding="utf-8"))
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0
