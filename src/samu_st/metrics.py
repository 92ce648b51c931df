"""Evaluation metrics: BLEU (sacrebleu), resource-group means, TRFGap, WER/CER (jiwer), R@1.

All scores come from the standard libraries so that they compare with published numbers:
corpus BLEU-4 with sacrebleu's defaults (13a tokenisation, exponential smoothing, mixed case),
WER and CER from jiwer on normalised text. Group means follow the paper: the arithmetic mean
of the per-language scores of the languages of a group that were evaluated; a group with no
evaluated language is missing (``None``), never 0. TRFGap = High − Low.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import jiwer
import numpy as np
import torch
from sacrebleu.metrics import BLEU

from samu_st.languages import GROUPS, ResourceGroup
from samu_st.text import Normalizer


@dataclass(frozen=True)
class BleuResult:
    """One corpus BLEU score and the sacrebleu signature that makes it reproducible."""

    score: float  # corpus BLEU-4, 0-100
    signature: str  # e.g. "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0"


@dataclass(frozen=True)
class GroupScores:
    """Per-language scores and their resource-group means (``None`` = no language evaluated)."""

    per_language: dict[str, float]  # language code -> score
    high: float | None  # mean over evaluated high-resource languages (fr de es ca)
    mid: float | None  # mean over evaluated mid-resource languages
    low: float | None  # mean over evaluated low-resource languages
    trfgap: float | None  # high - low; None if either is missing

    @classmethod
    def from_per_language(cls, per_language: Mapping[str, float]) -> GroupScores:
        means = group_means(per_language)
        return cls(
            per_language=dict(per_language),
            high=means["high"],
            mid=means["mid"],
            low=means["low"],
            trfgap=trfgap(means["high"], means["low"]),
        )


def _check_pairs(hyps: Sequence[str], refs: Sequence[str]) -> None:
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} references")
    if not refs:
        raise ValueError("no sentences to score")


def corpus_bleu(hyps: Sequence[str], refs: Sequence[str]) -> BleuResult:
    """sacrebleu corpus BLEU-4 of ``hyps`` against one reference each (13a, the defaults)."""
    _check_pairs(hyps, refs)
    bleu = BLEU()
    score = bleu.corpus_score(list(hyps), [list(refs)]).score
    return BleuResult(score=float(score), signature=str(bleu.get_signature()))


def bleu_by_language(
    hyps_by_lang: Mapping[str, Sequence[str]], refs_by_lang: Mapping[str, Sequence[str]]
) -> tuple[GroupScores, str]:
    """Corpus BLEU per language, with group means and TRFGap, and the sacrebleu signature."""
    if set(hyps_by_lang) != set(refs_by_lang):
        raise ValueError(
            f"languages differ: hypotheses {sorted(hyps_by_lang)}, "
            f"references {sorted(refs_by_lang)}"
        )
    if not hyps_by_lang:
        raise ValueError("no languages to score")
    per_language: dict[str, float] = {}
    signature = ""
    for lang in hyps_by_lang:
        result = corpus_bleu(hyps_by_lang[lang], refs_by_lang[lang])
        per_language[lang] = result.score
        signature = result.signature
    return GroupScores.from_per_language(per_language), signature


def group_means(per_language: Mapping[str, float]) -> dict[ResourceGroup, float | None]:
    """Arithmetic mean per resource group over the languages present in ``per_language``.

    Languages outside CoVoST-2's 21 (e.g. Irish) count in no group. A group none of whose
    languages was evaluated is ``None``.
    """
    means: dict[ResourceGroup, float | None] = {}
    for group, codes in GROUPS.items():
        scores = [per_language[code] for code in codes if code in per_language]
        means[group] = sum(scores) / len(scores) if scores else None
    return means


def trfgap(high: float | None, low: float | None) -> float | None:
    """Transfer gap High − Low (the paper's TRFGap); ``None`` if either mean is missing."""
    if high is None or low is None:
        return None
    return high - low


def _normalised(
    hyps: Sequence[str], refs: Sequence[str], normalizer: Normalizer | None
) -> tuple[list[str], list[str]]:
    _check_pairs(hyps, refs)
    if normalizer is None:
        return list(hyps), list(refs)
    return [normalizer(h) for h in hyps], [normalizer(r) for r in refs]


def wer(hyps: Sequence[str], refs: Sequence[str], normalizer: Normalizer | None = None) -> float:
    """Corpus word error rate (a fraction; jiwer) after ``normalizer`` on both sides.

    Pass the normaliser used to prepare the training labels (``samu_st.text.get_normalizer``).
    """
    hyps_n, refs_n = _normalised(hyps, refs, normalizer)
    return float(jiwer.wer(refs_n, hyps_n))


def cer(hyps: Sequence[str], refs: Sequence[str], normalizer: Normalizer | None = None) -> float:
    """Corpus character error rate (a fraction; jiwer) after ``normalizer`` on both sides."""
    hyps_n, refs_n = _normalised(hyps, refs, normalizer)
    return float(jiwer.cer(refs_n, hyps_n))


def retrieval_recall_at_1(
    speech_emb: torch.Tensor | np.ndarray, text_emb: torch.Tensor | np.ndarray, chunk: int = 4096
) -> float:
    """Speech→text retrieval recall@1 by cosine similarity.

    ``speech_emb`` (N, D) and ``text_emb`` (N, D) are paired by row; the fraction of rows ``i``
    whose most similar text embedding is row ``i`` (ties go to the lowest index). The (N, N)
    similarity matrix is computed ``chunk`` rows at a time.
    """
    speech = torch.as_tensor(speech_emb).detach().float()
    text = torch.as_tensor(text_emb).detach().float().to(speech.device)
    if speech.ndim != 2 or speech.shape != text.shape:
        raise ValueError(f"need two (N, D) arrays of one shape, got {speech.shape}, {text.shape}")
    if speech.shape[0] == 0:
        raise ValueError("no embeddings to score")
    speech = torch.nn.functional.normalize(speech, dim=-1)
    text = torch.nn.functional.normalize(text, dim=-1)
    hits = 0
    for start in range(0, speech.shape[0], chunk):
        best = (speech[start : start + chunk] @ text.T).argmax(dim=-1)
        target = torch.arange(start, start + best.shape[0], device=best.device)
        hits += int((best == target).sum())
    return hits / speech.shape[0]


def is_finite_score(value: object) -> bool:
    """Whether ``value`` is a real, finite number (bools excluded)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
