"""``samu-st train-ctc CONFIG [key=value ...] [--resume]`` (CTC fine-tuning, the notebook
recipe and the ctc-xlsr baseline) and ``samu-st prepare irish --out DIR`` (the synthetic Irish
Common Voice folder it is demonstrated on)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train-ctc",
        help="CTC fine-tuning of a speech encoder (ASR; the ctc-xlsr baseline)",
        description="Fine-tune a wav2vec2 / XLS-R encoder with a CTC head on the character "
        "vocabulary of the training transcripts (one language or several). CONFIG is a YAML "
        "file holding a `train_ctc:` section (or that step's config alone); key=value overrides "
        "are relative to it, e.g. train.max_steps=100 normalizer=irish. Writes vocab.json, "
        "label_filter.json (utterances too short for their labels), checkpoints, "
        "train_log.jsonl (dev WER), config.yaml, OUT_DIR/final (Wav2Vec2ForCTC + processor) "
        "and evaluation.json (test WER, greedy and n-gram LM).",
    )
    parser.add_argument("config", type=Path, metavar="CONFIG", help="YAML config file")
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="config overrides (YAML values)"
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue the run in out_dir from its last checkpoint"
    )
    parser.set_defaults(func=run)


def add_prepare_irish(sub: Any) -> None:
    """``samu-st prepare irish`` (registered by :mod:`samu_st.cli.cmd_prepare`)."""
    irish = sub.add_parser(
        "irish",
        help="synthesise the Irish (ga-IE) test corpus in Common Voice layout (espeak-ng)",
        description="Short everyday Irish sentences said by espeak-ng's ga voice with several "
        "synthetic speakers (dev/test speakers unseen in train), written as a Common Voice "
        "language folder: train/dev/test/validated.tsv and clips/*.mp3 (48 kHz). "
        "Deterministic from the seed; a second call with the same config returns at once.",
    )
    irish.add_argument("--out", required=True, type=Path, help="output folder (e.g. .../ga-IE)")
    irish.add_argument(
        "--config", type=Path, default=None, help="YAML of IrishCorpusConfig (default: defaults)"
    )
    irish.add_argument("--seed", type=int, default=None, help="override the config's seed")
    irish.add_argument("--workers", type=int, default=2, help="parallel espeak-ng jobs")
    irish.set_defaults(func=run_prepare_irish)


def run(args: argparse.Namespace) -> int:
    from samu_st.config import load_step_config
    from samu_st.steps.train_ctc import TrainCtcConfig, run_train_ctc

    cfg = load_step_config(TrainCtcConfig, args.config, "train_ctc", args.overrides)
    final = run_train_ctc(cfg, resume=args.resume)
    print(f"CTC model saved to {final}")
    return 0


def run_prepare_irish(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from samu_st.config import load_config
    from samu_st.data.irish import IrishCorpusConfig, prepare_irish

    cfg = load_config(IrishCorpusConfig, args.config) if args.config else IrishCorpusConfig()
    if args.seed is not None:
        cfg = replace(cfg, seed=args.seed)
    out = prepare_irish(args.out, cfg, workers=args.workers)
    print(f"synthetic Irish corpus in {out} (import with: samu-st prepare commonvoice {out} ...)")
    return 0
