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
        "of each layer (mini-CoVoST: test speakers no encoder heard). ENCODER is an encoder "
        "folder of any family (wav2vec2, HuBERT, WavLM, w2v-BERT, Whisper), "
        "packaged:mini-xls-r, or random-mini (a randomly initialised mini encoder).",
    )
    parser.add_argument("encoders", nargs="+", metavar="ENCODER")
    parser.add_argument("--corpus", nargs="+", required=True, help="corpus folders / manifests")
    parser.add_argument("--languages", nargs="*", default=["fr", "de", "es", "it"])
    parser.add_argument("--epochs", type=int, default=40, help="passes of each linear head")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from samu_st.models.encoder import EncoderConfig, folder_family
    from samu_st.packaged import resolve_model_path
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
            family="wav2vec2" if random else folder_family(resolve_model_path(name) or name),
            pretrained=None if random else name,
            size=name.removeprefix("random-") if random else "mini",
            mode="frozen",
        )
        result = {"name": name, **run_probe(enc, cfg)}
        results.append(result)
        cers = " ".join(f"{r['layer']}:{r['cer']:.3f}" for r in result["layers"])
        print(f"{name}: CER by layer {cers}; best {result['best_layer']['cer']:.3f}", flush=True)
    if args.out is not None:
        from samu_st.atomic import write_text_atomic

        write_text_atomic(args.out, json.dumps(results, indent=2) + "\n", point="probe")
    return 0
