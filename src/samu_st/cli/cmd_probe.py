"""``samu-st probe``: linear CTC probe of frozen encoders (:mod:`samu_st.probe`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "probe",
        help="compare encoders by a linear CTC probe of their frozen features",
        description="Encode a transcribed corpus once with each frozen encoder, train a linear "
        "CTC head per layer on the cached features and print the test character error rate "
        "of each layer (mini-CoVoST: test speakers no encoder heard). ENCODER is a wav2vec2 "
        "folder, packaged:mini-xls-r, or random-mini (a randomly initialised mini encoder).",
    )
    parser.add_argument("encoders", nargs="+", metavar="ENCODER")
    parser.add_argument("--corpus", nargs="+", required=True, help="corpus folders / manifests")
    parser.add_argument("--languages", nargs="*", default=["fr", "de", "es", "it"])
    parser.add_argument("--epochs", type=int, default=40, help="passes of each linear head")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from samu_st.models.encoder import EncoderConfig
    from samu_st.probe import ProbeConfig, run_probe

    cfg = ProbeConfig(
        manifests=tuple(args.corpus),
        languages=tuple(args.languages),
        epochs=args.epochs,
        seed=args.seed,
    )
    results = []
    for name in args.encoders:
        random = name.startswith("random-")
        enc = EncoderConfig(
            pretrained=None if random else name,
            size=name.removeprefix("random-") if random else "mini",
            mode="frozen",
        )
        result = {"name": name, **run_probe(enc, cfg)}
        results.append(result)
        cers = " ".join(f"{r['layer']}:{r['cer']:.3f}" for r in result["layers"])
        print(f"{name}: CER by layer {cers}; best {result['best_layer']['cer']:.3f}", flush=True)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0
