"""``samu-st model-summary CONFIG``: parameter counts of the translator a config describes."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from samu_st.config import from_dict, load_yaml
from samu_st.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "model-summary",
        help="total and trainable parameters per module group of the translator in CONFIG",
        description="Count the parameters of the speech translator described by the `model:` "
        "section of CONFIG, per group (encoder, adapters, length adaptor, projection, decoder "
        "trainable/frozen, embeddings), and relate them to the paper's 700M / 75M. The model "
        "is built on the meta device: no weights are read or allocated. Pretrained folders "
        "that exist contribute their config.json and tokenizer; missing ones fall back to the "
        "preset architecture, with a note.",
    )
    parser.add_argument("config", type=Path, metavar="CONFIG", help="YAML with a model: section")
    parser.add_argument(
        "--json", action="store_true", help='print {"total", "trainable", "groups"}'
    )
    parser.add_argument(
        "--from-architecture",
        action="store_true",
        help="ignore the pretrained folders and count the presets' architectures",
    )
    parser.add_argument(
        "--vocab-size", type=int, default=None, help="decoder vocabulary when no tokenizer is read"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from samu_st.models.summary import format_summary, summarize_config
    from samu_st.models.translator import TranslatorConfig

    data = load_yaml(args.config)
    if not isinstance(data.get("model"), dict):
        raise ConfigError(f"{args.config}: no `model:` section describing the translator")
    cfg = from_dict(TranslatorConfig, data["model"], where=f"{args.config}: model")
    summary = summarize_config(cfg, args.from_architecture, args.vocab_size)
    if args.json:
        print(json.dumps(summary.to_json(), indent=2))
    else:
        print(format_summary(summary))
    return 0
