"""A tiny ``sentence-transformers/LaBSE`` in the real sentence-transformers layout.

LaBSE's sentence embedding is its module chain: ``0`` the ``BertModel`` at the folder root,
``1_Pooling`` ([CLS]), ``2_Dense`` (768 → 768, tanh), ``3_Normalize``. The folder is built with
sentence-transformers' own classes (``models.Transformer/Pooling/Dense/Normalize`` and
``SentenceTransformer(modules=...).save``), so its files are exactly what that library writes;
the BERT config keeps every field of LaBSE's released ``config.json`` with tiny sizes, and the
tokenizer is a cased WordPiece ``BertTokenizer(Fast)`` with ``vocab.txt`` beside ``tokenizer.json``
as in the release.

``pooling_format="legacy"`` rewrites what the released folder (saved by sentence-transformers
1.x) holds instead: the old boolean pooling keys, ``sentence_transformers.models.*`` module types,
``sentence_bert_config.json`` with ``max_seq_length``/``do_lower_case`` and the Dense weights as
``pytorch_model.bin``.
"""

from __future__ import annotations

import importlib
import json
import string
import tempfile
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import BertConfig, BertModel, BertTokenizer

# The released config.json, sizes aside.
LABSE_FIELDS: dict[str, Any] = {
    "architectures": ["BertModel"],
    "attention_probs_dropout_prob": 0.1,
    "gradient_checkpointing": False,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "initializer_range": 0.02,
    "layer_norm_eps": 1e-12,
    "model_type": "bert",
    "pad_token_id": 0,
    "position_embedding_type": "absolute",
    "type_vocab_size": 2,
    "use_cache": True,
}
# LaBSE: hidden 768, 12 layers, 12 heads, FFN 3072, 512 positions, 501,153 WordPieces.
TINY_SIZES: dict[str, Any] = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 64,
}
MAX_SEQ_LENGTH = 32  # LaBSE: 256
_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
_WORDS = ["the", "cat", "le", "chat", "der", "hund", "un", "una", "two", "deux", "zwei"]
PoolingFormat = Literal["current", "legacy"]


def _vocab() -> list[str]:
    """Whole words, every ASCII letter and digit, their ``##`` continuations and punctuation:
    any Latin text tokenises into real pieces, never all-[UNK]."""
    chars = list(string.ascii_letters + string.digits)
    return _SPECIALS + _WORDS + chars + [f"##{c}" for c in chars] + list(string.punctuation)


def _write_bert(folder: Path, seed: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(_vocab()) + "\n", encoding="utf-8")
    # transformers 5: BertTokenizer is the tokenizers-backed class BertTokenizerFast names
    tokenizer = BertTokenizer(vocab=str(folder / "vocab.txt"), do_lower_case=False)
    tokenizer.model_max_length = 512  # as LaBSE's tokenizer_config.json
    tokenizer.save_pretrained(folder)
    torch.manual_seed(seed)
    config = BertConfig(**LABSE_FIELDS, **TINY_SIZES, vocab_size=len(_vocab()))
    BertModel(config).save_pretrained(folder)


def _make_legacy(folder: Path) -> None:
    """The layout of the released LaBSE (sentence-transformers 1.x)."""
    dim = TINY_SIZES["hidden_size"]
    pooling = {
        "word_embedding_dimension": dim,
        "pooling_mode_cls_token": True,
        "pooling_mode_mean_tokens": False,
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
    }
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling, indent=2))
    kinds = [("", "Transformer"), ("1_Pooling", "Pooling"), ("2_Dense", "Dense"),
             ("3_Normalize", "Normalize")]  # fmt: skip
    modules = [{"idx": i, "name": str(i), "path": path, "type": f"sentence_transformers.models.{k}"}
               for i, (path, k) in enumerate(kinds)]  # fmt: skip
    (folder / "modules.json").write_text(json.dumps(modules, indent=2))
    st_config = {"max_seq_length": MAX_SEQ_LENGTH, "do_lower_case": False}
    (folder / "sentence_bert_config.json").write_text(json.dumps(st_config, indent=2))
    dense = folder / "2_Dense"
    dense_cfg = json.loads((dense / "config.json").read_text())
    keep = ("in_features", "out_features", "bias", "activation_function")
    (dense / "config.json").write_text(json.dumps({k: dense_cfg[k] for k in keep}, indent=2))
    from safetensors.torch import load_file

    torch.save(load_file(dense / "model.safetensors"), dense / "pytorch_model.bin")
    (dense / "model.safetensors").unlink()


def write_labse(folder: Path, pooling_format: PoolingFormat = "current", seed: int = 0) -> Path:
    """Write the tiny LaBSE into ``folder`` (created) and return it."""
    from sentence_transformers import SentenceTransformer

    # the module classes' import path differs across sentence-transformers versions
    models = importlib.import_module("sentence_transformers.models")

    dim = TINY_SIZES["hidden_size"]
    with tempfile.TemporaryDirectory() as raw:
        _write_bert(Path(raw), seed)
        transformer = models.Transformer(raw, max_seq_length=MAX_SEQ_LENGTH)
        torch.manual_seed(seed + 1)  # the Dense layer's random init
        dense = models.Dense(dim, dim, bias=True, activation_function=torch.nn.Tanh())
        modules = [transformer, models.Pooling(dim, pooling_mode="cls"), dense, models.Normalize()]
        SentenceTransformer(modules=modules, device="cpu").save(str(folder))
        (folder / "vocab.txt").write_text((Path(raw) / "vocab.txt").read_text())
    if pooling_format == "legacy":
        _make_legacy(folder)
    return folder
