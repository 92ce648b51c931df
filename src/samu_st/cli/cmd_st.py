"""``samu-st train-st CONFIG [key=value ...] [--resume]``: step 3, speech translation training."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train-st",
        help="step 3: adapter-based multitask speech translation training",
        description="Train the speech translator (encoder + bottleneck adapters or full "
        "fine-tuning, length adaptor, MBART decoder with LNA-D) on all languages of the "
        "training manifests together. CONFIG is a YAML file holding a `train_st:` section (or "
        "that step's config alone); key=value overrides are relative to it, e.g. "
        "train.max_steps=100 model.encoder.mode=full. Writes checkpoints, train_log.jsonl, "
        "config.yaml and the exported model OUT_DIR/final.",
    )
    parser.add_argument("config", type=Path, metavar="CONFIG", help="YAML config file")
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="config overrides (YAML values)"
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue the run in out_dir from its last checkpoint"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from samu_st.config import load_step_config
    from samu_st.steps.train_st import TrainSTConfig, run_train_st

    cfg = load_step_config(TrainSTConfig, args.config, "train_st", args.overrides)
    final = run_train_st(cfg, resume=args.resume)
    print(f"translator saved to {final}")
    return 0
