"""``samu-st data stats MANIFEST...``: corpus size, durations, languages, and batch padding."""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from samu_st.data.manifest import Utterance, read_manifest
from samu_st.data.sampler import DurationBatchSampler, padding_fraction
from samu_st.errors import DataError


def corpus_stats(
    utterances: Sequence[Utterance],
    max_duration: float,
    *,
    seed: int = 0,
    max_batch_size: int | None = None,
) -> dict[str, Any]:
    """Counts, hours, duration quantiles, per-language totals, and the padding of epoch 0's
    duration-bucketed batches next to that of as many random batches of equal size."""
    d = np.array([u.duration for u in utterances], dtype=np.float64)
    per_lang: dict[str, list[float]] = defaultdict(list)
    for u in utterances:
        per_lang[u.language].append(u.duration)
    sampler = DurationBatchSampler(d, max_duration, max_batch_size=max_batch_size, seed=seed)
    batches = [[k.idx for k in b] for b in sampler.global_batches(0)]
    perm = np.random.default_rng(seed).permutation(len(d))
    random_batches = [b.tolist() for b in np.array_split(perm, len(batches))]
    return {
        "utterances": len(d),
        "hours": float(d.sum()) / 3600.0,
        "duration_s": {
            "min": float(d.min()),
            "median": float(np.median(d)),
            "mean": float(d.mean()),
            "max": float(d.max()),
        },
        "languages": {
            lang: {"utterances": len(v), "hours": sum(v) / 3600.0}
            for lang, v in sorted(per_lang.items(), key=lambda kv: (-len(kv[1]), kv[0]))
        },
        "max_duration_s": max_duration,
        "batches": len(batches),
        "mean_batch_size": len(d) / len(batches),
        "padding_bucketed": padding_fraction(d, batches),
        "padding_random": padding_fraction(d, random_batches),
    }


def format_stats(stats: dict[str, Any]) -> str:
    d = stats["duration_s"]
    lines = [
        f"utterances   {stats['utterances']}",
        f"hours        {stats['hours']:.3f}",
        f"duration (s) min {d['min']:.2f}  median {d['median']:.2f}  mean {d['mean']:.2f}  "
        f"max {d['max']:.2f}",
        f"batches      {stats['batches']} of <= {stats['max_duration_s']:g} s padded "
        f"(mean {stats['mean_batch_size']:.1f} utterances)",
        f"padding      {100 * stats['padding_bucketed']:.2f}% duration-bucketed, "
        f"{100 * stats['padding_random']:.2f}% random batches of the same count",
        "language     utterances     hours",
    ]
    for lang, v in stats["languages"].items():
        lines.append(f"  {lang:<10} {v['utterances']:>10} {v['hours']:>9.3f}")
    return "\n".join(lines)


def _stats(args: argparse.Namespace) -> int:
    utts = [u for path in args.manifests for u in read_manifest(path)]
    if not utts:
        raise DataError(", ".join(map(str, args.manifests)), "no utterances in the manifest(s)")
    stats = corpus_stats(
        utts, args.max_duration, seed=args.seed, max_batch_size=args.max_batch_size
    )
    stats["manifests"] = [str(p) for p in args.manifests]
    print(json.dumps(stats, indent=2) if args.json else format_stats(stats))
    return 0


def register(subparsers: Any) -> None:
    data = subparsers.add_parser("data", help="inspect manifests")
    sub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    p = sub.add_parser("stats", help="size, durations, languages and batch padding of manifests")
    p.add_argument("manifests", nargs="+", metavar="MANIFEST", help="JSONL manifest(s)")
    p.add_argument(
        "--max-duration",
        type=float,
        default=600.0,
        help="padded seconds per batch (default 600, the paper's 10 minutes)",
    )
    p.add_argument("--max-batch-size", type=int, default=None, help="utterances per batch cap")
    p.add_argument("--seed", type=int, default=0, help="shuffling seed")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=_stats)
