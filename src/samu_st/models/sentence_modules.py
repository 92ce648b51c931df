"""A sentence-transformers folder's sentence embedding, read with transformers + torch only.

A sentence-transformers model is a chain listed in ``modules.json``: a Hugging Face
``Transformer`` (the folder root or a subfolder such as ``0_Transformer``), then ``Pooling``
(token states → one vector), then optional ``Dense`` layers (linear + activation) and
``Normalize`` (L2). LaBSE's sentence embedding — the vector its translation-ranking training
aligned across languages — is [CLS] → Dense(768, tanh) → L2-normalise; the raw [CLS] hidden state
is a different vector. This module reads that chain so the teacher computes exactly
``SentenceTransformer(folder).encode(texts)`` without importing sentence-transformers (a test
extra only) and without importing class names a config file supplies.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from samu_st.errors import ModelLoadError

MODULES_FILE = "modules.json"
# Pooling modes computed here: the names of the current config format ("pooling_mode").
POOLING_MODES = ("cls", "mean", "max", "mean_sqrt_len_tokens")
# The old config format: one boolean per mode.
_LEGACY_POOLING_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
# Activations a Dense config may name, by their sentence-transformers spelling. A fixed table,
# never an import of whatever string the file holds.
_ACTIVATIONS: dict[str, tuple[str, Callable[[], nn.Module]]] = {
    "torch.nn.modules.activation.Tanh": ("tanh", nn.Tanh),
    "torch.nn.modules.linear.Identity": ("identity", nn.Identity),
    "torch.nn.modules.activation.ReLU": ("relu", nn.ReLU),
    "torch.nn.modules.activation.GELU": ("gelu", nn.GELU),
    "torch.nn.modules.activation.Sigmoid": ("sigmoid", nn.Sigmoid),
}
_DENSE_WEIGHTS = ("model.safetensors", "pytorch_model.bin")


@dataclass(frozen=True)
class DenseSpec:
    """One ``Dense`` module of the chain."""

    in_features: int  # input width
    out_features: int  # output width
    activation: str  # as the config names it, e.g. torch.nn.modules.activation.Tanh
    weights: Path  # model.safetensors or pytorch_model.bin (keys linear.weight, linear.bias)
    bias: bool  # whether the linear layer has a bias

    def describe(self) -> dict[str, Any]:
        return {"in_features": self.in_features, "out_features": self.out_features,
                "activation": self.activation, "bias": self.bias}  # fmt: skip


@dataclass(frozen=True)
class SentenceChain:
    """What ``modules.json`` says turns token states into the sentence embedding."""

    transformer: Path  # the Hugging Face model + tokenizer folder
    pooling: str  # one of POOLING_MODES
    dense: tuple[DenseSpec, ...]  # applied in order after pooling
    normalize: bool  # L2-normalise the result
    max_seq_length: int | None  # sentence_bert_config.json's truncation length, if it sets one
    do_lower_case: bool  # sentence_bert_config.json: lowercase texts before tokenising

    def summary(self) -> str:
        """E.g. ``cls + dense(tanh) + normalize``."""
        parts = [self.pooling, *(f"dense({_ACTIVATIONS[d.activation][0]})" for d in self.dense)]
        return " + ".join(parts + (["normalize"] if self.normalize else []))

    def fingerprint(self) -> str:
        """A short hash of the chain and the Dense weights' bytes (small: D×D floats), so a
        cached vector of another chain, or of replaced Dense weights, is never reused."""
        digest = hashlib.sha256(self.summary().encode())
        for spec in self.dense:
            digest.update(spec.weights.read_bytes())
        return digest.hexdigest()[:12]


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise ModelLoadError(f"{path}: file not found (listed by {MODULES_FILE})")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ModelLoadError(f"{path}: not valid JSON ({err})") from err


def pooling_mode(path: Path) -> str:
    """The pooling mode of a ``1_Pooling/config.json``, in either format: the current
    ``"pooling_mode": "cls"`` or the old booleans ``"pooling_mode_cls_token": true``."""
    cfg = _read_json(path)
    if "pooling_mode" in cfg:
        mode = cfg["pooling_mode"]
        modes = [mode] if isinstance(mode, str) else list(mode)
    else:
        modes = [name for key, name in _LEGACY_POOLING_KEYS.items() if cfg.get(key)]
        unknown = [k for k, v in cfg.items() if k.startswith("pooling_mode") and v and
                   k not in _LEGACY_POOLING_KEYS]  # fmt: skip
        modes += unknown
    if len(modes) != 1:
        raise ModelLoadError(
            f"{path}: exactly one pooling mode is supported, the file sets {modes or 'none'}"
        )
    if modes[0] not in POOLING_MODES:
        raise ModelLoadError(
            f"{path}: pooling mode {modes[0]!r} is not supported (supported: {POOLING_MODES})"
        )
    return str(modes[0])


def _dense_spec(folder: Path) -> DenseSpec:
    path = folder / "config.json"
    cfg = _read_json(path)
    name = cfg.get("activation_function", "torch.nn.modules.activation.Tanh")
    if name not in _ACTIVATIONS:
        raise ModelLoadError(
            f"{path}: activation_function {name!r} is not supported "
            f"(supported: {sorted(_ACTIVATIONS)})"
        )
    if cfg.get("module_input_name", "sentence_embedding") != "sentence_embedding":
        raise ModelLoadError(f"{path}: only a Dense on the sentence embedding is supported")
    weights = next((folder / w for w in _DENSE_WEIGHTS if (folder / w).is_file()), None)
    if weights is None:
        expected = " or ".join(_DENSE_WEIGHTS)
        raise ModelLoadError(f"{folder}: Dense module without weights ({expected})")
    return DenseSpec(int(cfg["in_features"]), int(cfg["out_features"]), name, weights,
                     bool(cfg.get("bias", True)))  # fmt: skip


def _module_kind(entry: dict[str, Any], path: Path) -> str:
    """``Transformer``/``Pooling``/``Dense``/``Normalize``/``Dropout`` from a module type, which
    sentence-transformers spells per version (``sentence_transformers.models.Dense``,
    ``sentence_transformers.base.modules.dense.Dense``)."""
    kind = str(entry.get("type", "")).rsplit(".", 1)[-1]
    if kind not in ("Transformer", "Pooling", "Dense", "Normalize", "Dropout"):
        raise ModelLoadError(f"{path}: module type {entry.get('type')!r} is not supported")
    return kind


def _tokenizer_max_length(folder: Path) -> int | None:
    path = folder / "tokenizer_config.json"
    if not path.is_file():
        return None
    value = json.loads(path.read_text(encoding="utf-8")).get("model_max_length")
    # transformers writes a huge sentinel (1e30) for "no limit"
    return int(value) if isinstance(value, int | float) and value < 1e9 else None


def read_chain(folder: str | Path) -> SentenceChain | None:
    """The module chain of a sentence-transformers folder; ``None`` for a plain HF folder.

    Raises :class:`ModelLoadError` naming the file for anything it cannot compute exactly (an
    unknown pooling mode or activation, a module type it does not know, a wrong order)."""
    root = Path(folder)
    path = root / MODULES_FILE
    if not path.is_file():
        return None
    entries = sorted(_read_json(path), key=lambda e: int(e.get("idx", 0)))
    kinds = [_module_kind(e, path) for e in entries]
    if kinds[:2] != ["Transformer", "Pooling"] or {"Transformer", "Pooling"} & set(kinds[2:]):
        raise ModelLoadError(
            f"{path}: expected Transformer, Pooling, then Dense/Normalize; got {kinds}"
        )
    transformer = root / entries[0].get("path", "")
    st_cfg_path = transformer / "sentence_bert_config.json"
    st_cfg = _read_json(st_cfg_path) if st_cfg_path.is_file() else {}
    dense: list[DenseSpec] = []
    normalize = False
    for entry, kind in zip(entries[2:], kinds[2:], strict=True):
        if normalize and kind == "Dense":
            raise ModelLoadError(f"{path}: a Dense after Normalize is not supported")
        if kind == "Dense" and dense:  # describe() reports one Dense; no known teacher has two
            raise ModelLoadError(f"{path}: more than one Dense module is not supported")
        if kind == "Dense":
            dense.append(_dense_spec(root / entry["path"]))
        normalize = normalize or kind == "Normalize"
    # sentence-transformers >= 5 keeps the truncation length in the tokenizer's config instead
    max_seq = st_cfg.get("max_seq_length") or _tokenizer_max_length(transformer)
    return SentenceChain(
        transformer=transformer,
        pooling=pooling_mode(root / entries[1].get("path", "1_Pooling") / "config.json"),
        dense=tuple(dense),
        normalize=normalize,
        max_seq_length=int(max_seq) if max_seq is not None else None,
        do_lower_case=bool(st_cfg.get("do_lower_case", False)),
    )


def pool_tokens(hidden: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """Token states (B, L, D) with mask (B, L) → (B, D); padding never enters a vector."""
    if mode == "cls":
        first = mask.to(torch.int).argmax(dim=1)  # the first real token (right padding: 0)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), first]
    keep = mask.unsqueeze(-1).to(hidden.dtype)
    if mode == "max":
        return hidden.masked_fill(keep == 0, float("-inf")).max(dim=1).values
    count = keep.sum(1).clamp(min=1e-9)
    total = (hidden * keep).sum(1)
    if mode == "mean":
        return total / count
    if mode == "mean_sqrt_len_tokens":
        return total / count.sqrt()
    raise ValueError(f"pooling mode {mode!r} not in {POOLING_MODES}")


def _load_dense(spec: DenseSpec) -> nn.Sequential:
    if spec.weights.suffix == ".safetensors":
        state = load_file(spec.weights)
    else:
        state = torch.load(spec.weights, map_location="cpu", weights_only=True)
    linear = nn.Linear(spec.in_features, spec.out_features, bias=spec.bias)
    try:
        linear.load_state_dict({k.removeprefix("linear."): v for k, v in state.items()})
    except RuntimeError as err:  # missing, unexpected or mis-shaped keys
        raise ModelLoadError(f"{spec.weights}: does not match its Dense config ({err})") from err
    return nn.Sequential(linear, _ACTIVATIONS[spec.activation][1]())


class SentenceHead(nn.Module):
    """Pooling → Dense layers → optional L2 normalisation, as a sentence-transformers chain."""

    def __init__(self, pooling: str, dense: tuple[DenseSpec, ...] = (), normalize: bool = False):
        super().__init__()
        if pooling not in POOLING_MODES:
            raise ValueError(f"pooling mode {pooling!r} not in {POOLING_MODES}")
        self.pooling = pooling
        self.specs = dense
        self.dense = nn.Sequential(*(_load_dense(spec) for spec in dense))
        self.normalize = normalize

    @classmethod
    def from_chain(cls, chain: SentenceChain) -> SentenceHead:
        return cls(chain.pooling, chain.dense, chain.normalize)

    def out_dim(self, hidden_size: int) -> int:
        return self.specs[-1].out_features if self.specs else hidden_size

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, L, D) states and (B, L) mask → (B, D') sentence embeddings."""
        vector = self.dense(pool_tokens(hidden, mask, self.pooling))
        return nn.functional.normalize(vector, p=2, dim=1) if self.normalize else vector
