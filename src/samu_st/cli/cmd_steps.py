"""``samu-st pretrain | distill | pretrain-text CONFIG [key=value ...] [--resume]``.

Each command loads its section of CONFIG (``pretrain:``, ``distill:``, ``pretrain_text:``; or
the whole file when it holds one step's config alone), applies the overrides, runs the step
and prints the folder of the exported model.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

_STEPS: dict[str, tuple[str, str, str]] = {
    # command: (config section, help, description)
    "pretrain": (
        "pretrain",
        "step 1: wav2vec2 self-supervised pretraining on unlabeled audio",
        "Pretrain (or continue pretraining) a wav2vec2 encoder with the contrastive and "
        "diversity losses on the unlabeled audio of the `pretrain:` section of CONFIG; the "
        "encoder is exported to <out_dir>/final.",
    ),
    "distill": (
        "distill",
        "step 2: SAMU semantic distillation of the encoder into a text teacher's space",
        "Train encoder + attention pooling to match the frozen text teacher's sentence "
        "embeddings (cosine distance) as the `distill:` section of CONFIG says; logs dev "
        "speech-to-text retrieval R@1 and exports the SAMU model to <out_dir>/final.",
    ),
    "pretrain-text": (
        "pretrain_text",
        "pretrain a small MBART by text denoising (the mini setting's decoder)",
        "Train a tokenizer and an MBART of a preset size with mBART's text infilling on the "
        "texts of the manifests in the `pretrain_text:` section of CONFIG; the model and its "
        "tokenizer are exported to <out_dir>/final.",
    ),
}


def _runner(section: str) -> tuple[type[Any], Callable[[Any, bool], Path]]:
    # Imported on use: `samu-st --help` must not pay for torch and transformers.
    if section == "pretrain":
        from samu_st.steps.pretrain import PretrainConfig, run_pretrain

        return PretrainConfig, run_pretrain
    if section == "distill":
        from samu_st.steps.distill import DistillConfig, run_distill

        return DistillConfig, run_distill
    from samu_st.steps.pretrain_text import PretrainTextConfig, run_pretrain_text

    return PretrainTextConfig, run_pretrain_text


def register(subparsers: argparse._SubParsersAction) -> None:
    for command, (section, help_text, description) in _STEPS.items():
        parser = subparsers.add_parser(command, help=help_text, description=description)
        parser.add_argument("config", type=Path, metavar="CONFIG", help="YAML config file")
        parser.add_argument(
            "overrides",
            nargs="*",
            metavar="KEY=VALUE",
            help="overrides relative to the step's section, e.g. train.max_steps=100",
        )
        parser.add_argument(
            "--resume", action="store_true", help="continue from the newest checkpoint in out_dir"
        )
        parser.set_defaults(func=run, section=section)


def run(args: argparse.Namespace) -> int:
    from samu_st.config import load_step_config

    config_class, runner = _runner(args.section)
    cfg = load_step_config(config_class, args.config, args.section, args.overrides)
    folder = runner(cfg, args.resume)
    print(folder)
    return 0
