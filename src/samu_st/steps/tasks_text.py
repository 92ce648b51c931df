"""Text tasks of the MBART step: denoising by text infilling (BART / mBART), or translation.

Each text is corrupted by masking spans of whole words until about ``mask_ratio`` of its words
are masked, span lengths drawn from Poisson(``poisson_lambda``) (mBART: 35 % of the words,
lambda 3.5); every span becomes ONE ``<mask>`` token, and a span of length 0 inserts one.
Sentence permutation, mBART's other noise, is moot for single sentences. The model reads
``noised </s> <lang>`` and reconstructs ``<lang> text </s>`` with the decoder prefix that step 3
uses (``[</s>, <lang>]``, :func:`~samu_st.models.tokenizer.make_decoder_targets`).
For translation (the cascade baseline's text MT) the source is the transcript, not noised,
and ``<lang>`` is the SOURCE language on both sides, as in step 3.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from samu_st.data.sampler import SampleKey
from samu_st.errors import ConfigError
from samu_st.losses import IGNORE_INDEX, label_smoothed_nll_loss
from samu_st.models.encoder import lengths_to_mask
from samu_st.models.tokenizer import TargetTokenizer, make_decoder_targets
from samu_st.training.task import LossOutput, TaskBase


@dataclass(frozen=True)
class NoiseConfig:
    """Text infilling."""

    mask_ratio: float = 0.35  # share of words masked (probabilistic rounding per text)
    poisson_lambda: float = 3.5  # mean masked-span length in words

    def __post_init__(self) -> None:
        if not 0.0 <= self.mask_ratio <= 1.0 or self.poisson_lambda < 0:
            raise ConfigError("noise: need 0 <= mask_ratio <= 1 and poisson_lambda >= 0")


def infill(
    words: Sequence[Sequence[int]], mask_id: int, cfg: NoiseConfig, rng: np.random.Generator
) -> list[int]:
    """Token ids of ``words`` (one id list per word) with masked spans, each one ``mask_id``."""
    n = len(words)
    target = int(np.floor(n * cfg.mask_ratio + rng.random()))
    lengths: list[int] = []
    while sum(lengths) < target:
        lengths.append(int(rng.poisson(cfg.poisson_lambda)))
    if lengths:
        lengths[-1] -= sum(lengths) - target
    span = np.zeros(n, dtype=np.int64)  # 0: kept, k: inside span k
    inserted = np.zeros(n + 1, dtype=bool)  # a <mask> inserted before word i
    for k, length in enumerate(lengths, start=1):
        if length == 0:
            inserted[int(rng.integers(0, n + 1))] = True
            continue
        length = min(length, n)
        start = int(rng.integers(0, n - length + 1))
        span[start : start + length] = k
    out: list[int] = []
    for i in range(n):
        if inserted[i]:
            out.append(mask_id)
        if span[i] == 0:
            out.extend(words[i])
        elif i == 0 or span[i - 1] != span[i]:
            out.append(mask_id)
    if inserted[n]:
        out.append(mask_id)
    return out


class TextDataset(Dataset[dict[str, Any]]):
    """(source, target, language) text triples; sources pre-tokenised word by word.

    For denoising the source and the target are the same text; for translation the source is
    the transcript and the target its English translation. Keys: int or ``SampleKey``.
    """

    def __init__(
        self,
        sources: Sequence[str],
        targets: Sequence[str],
        languages: Sequence[str],
        tokenizer: TargetTokenizer,
    ) -> None:
        if not len(sources) == len(targets) == len(languages):
            raise ValueError("sources, targets and languages differ in length")
        self.targets, self.languages = list(targets), list(languages)
        split = [t.split() for t in sources]
        flat = [w for ws in split for w in ws]
        ids = tokenizer.hf(flat, add_special_tokens=False)["input_ids"] if flat else []
        self.words: list[list[list[int]]] = []
        pos = 0
        for ws in split:
            self.words.append([list(x) for x in ids[pos : pos + len(ws)]])
            pos += len(ws)
        target_ids = tokenizer.hf(self.targets, add_special_tokens=False)["input_ids"]
        self.target_lengths = [len(t) for t in target_ids]

    def __len__(self) -> int:
        return len(self.targets)

    @property
    def token_counts(self) -> np.ndarray:
        """(N,) the longer side's tokens plus 2 special tokens (the sampler's "durations")."""
        src = [sum(map(len, w)) for w in self.words]
        return np.array([max(s, t) + 2 for s, t in zip(src, self.target_lengths, strict=True)],
                        dtype=np.float64)  # fmt: skip

    def __getitem__(self, key: int | SampleKey) -> dict[str, Any]:
        index = int(key[0]) if isinstance(key, tuple) else int(key)
        return {
            "index": index,
            "target": self.targets[index],
            "lang": self.languages[index],
            "words": self.words[index],
        }


@dataclass(frozen=True)
class DenoisingBatch:
    """Noised encoder inputs and teacher-forcing decoder tensors, all (B, ·) long/bool."""

    input_ids: torch.Tensor  # (B, S) noised text, </s>, <lang>; pad id after
    attention_mask: torch.Tensor  # (B, S) 1 on real tokens
    decoder_input_ids: torch.Tensor  # (B, L) [</s>, <lang>, y1 … yn], pad id after
    decoder_attention_mask: torch.Tensor  # (B, L) 1 on real tokens
    labels: torch.Tensor  # (B, L) [-100, y1 … yn, </s>], -100 after

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> DenoisingBatch:
        moved = {f.name: getattr(self, f.name).to(device, non_blocking=non_blocking)
                 for f in fields(self)}  # fmt: skip
        return replace(self, **moved)


class DenoisingCollator:
    """:class:`TextDataset` items -> :class:`DenoisingBatch` (noised sources; ``cfg=None``:
    sources as they are, for translation).

    ``seed=None`` draws the noise from numpy's global RNG (checkpointed: exact resume); a seed
    gives every batch the same noise each time (for validation), from ``(seed, indices)``.
    """

    def __init__(
        self,
        tokenizer: TargetTokenizer,
        cfg: NoiseConfig | None,
        max_positions: int,
        seed: int | None = None,
    ) -> None:
        self.tokenizer, self.cfg, self.seed = tokenizer, cfg, seed
        self.max_positions = max_positions
        self.mask_id = int(tokenizer.hf.mask_token_id)

    def _rng(self, indices: list[int]) -> np.random.Generator:
        if self.seed is None:
            return np.random.default_rng(np.random.randint(0, 2**31 - 1))
        return np.random.default_rng([self.seed, *indices])

    def __call__(self, items: Sequence[dict[str, Any]]) -> DenoisingBatch:
        rng = self._rng([int(it["index"]) for it in items])
        tok = self.tokenizer
        rows = []
        for it in items:
            if self.cfg is None:
                source = [i for word in it["words"] for i in word]
            else:
                source = infill(it["words"], self.mask_id, self.cfg, rng)
            rows.append(
                [*source[: self.max_positions - 2], tok.eos_id, tok.lang_token_id(it["lang"])]
            )
        lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
        input_ids = torch.full((len(rows), int(lengths.max())), tok.pad_id, dtype=torch.long)
        for i, r in enumerate(rows):
            input_ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        texts = [str(it["target"]) for it in items]
        langs = [str(it["lang"]) for it in items]
        dec = make_decoder_targets(tok, texts, langs, max_length=self.max_positions)
        return DenoisingBatch(
            input_ids=input_ids,
            attention_mask=lengths_to_mask(lengths, input_ids.shape[1]).long(),
            decoder_input_ids=dec.input_ids,
            decoder_attention_mask=dec.mask.long(),
            labels=dec.labels,
        )


class DenoisingTask(TaskBase):
    """Label-smoothed cross-entropy of the reconstruction (per target token)."""

    def __init__(self, label_smoothing: float = 0.0) -> None:
        self.label_smoothing = label_smoothing

    def _logits(self, model: nn.Module, batch: DenoisingBatch) -> torch.Tensor:
        out = model(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            decoder_input_ids=batch.decoder_input_ids,
            decoder_attention_mask=batch.decoder_attention_mask,
        )
        return out.logits

    def loss(self, model: nn.Module, batch: DenoisingBatch) -> LossOutput:
        logits = self._logits(model, batch)
        loss, nll = label_smoothed_nll_loss(logits, batch.labels, self.label_smoothing)
        tokens = int((batch.labels != IGNORE_INDEX).sum())
        return LossOutput(loss, tokens, {"nll": float(nll.detach())})

    def validate(self, model: nn.Module, loader: Any) -> dict[str, float]:
        """Dev NLL per token and token accuracy of the reconstruction (teacher forcing)."""
        device = next(model.parameters()).device
        nll_sum, correct, total = 0.0, 0, 0
        for batch in loader:
            batch = batch.to(device)
            logits = self._logits(model, batch)
            _, nll = label_smoothed_nll_loss(logits, batch.labels, 0.0, reduction="sum")
            valid = batch.labels != IGNORE_INDEX
            nll_sum += float(nll)
            correct += int(((logits.argmax(-1) == batch.labels) & valid).sum())
            total += int(valid.sum())
        return {"val_nll": nll_sum / max(total, 1), "val_token_acc": correct / max(total, 1)}
