"""``samu-st model-summary CONFIG``: parameter counts of the translator a config describes."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

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
    parser.add_argument(
        "--family",
        choices=("wav2vec2", "hubert", "wavlm", "w2v-bert", "whisper", "all"),
        default=None,
        help="count with this encoder family instead of the config's model.encoder.family "
        "(its preset of model.encoder.size; the encoder folder is not read); all: one table "
        "per family",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from samu_st.models.summary import format_summary, summarize_config
    from samu_st.models.translator import TranslatorConfig

    data = load_yaml(args.config)
    if not isinstance(data.get("model"), dict):
        raise ConfigError(f"{args.config}: no `model:` section describing the translator")
    cfg = from_dict(TranslatorConfig, data["model"], where=f"{args.config}: model")
    if args.family is None:
        configs: dict[str, Any] = {cfg.encoder.family: cfg}
    else:
        names = FAMILIES if args.family == "all" else (args.family,)
        configs = {name: _with_family(cfg, name) for name in names}
    results: dict[str, Any] = {
        name: summarize_config(one, args.from_architecture, args.vocab_size)
        for name, one in configs.items()
    }
    if args.json:
        if args.family == "all":
            print(json.dumps({k: v.to_json() for k, v in results.items()}, indent=2))
        else:
            print(json.dumps(next(iter(results.values())).to_json(), indent=2))
        return 0
    for name, summary in results.items():
        if len(results) > 1:
            print(f"## encoder family: {name}")
        print(format_summary(summary))
    return 0


FAMILIES = ("wav2vec2", "hubert", "wavlm", "w2v-bert", "whisper")


def _with_family(cfg: Any, family: str) -> Any:
    """``cfg`` with the encoder replaced by ``family``'s preset of the same size."""
    if family == cfg.encoder.family:
        return cfg
    encoder = replace(cfg.encoder, family=family, pretrained=None)
    return replace(cfg, encoder=encoder)
