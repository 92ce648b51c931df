"""Word n-gram language models in ARPA format, estimated in pure Python.

kenlm's estimator (``lmplz``) is a C++ binary that the ``kenlm`` wheel on PyPI does not ship,
so this module estimates the model itself: interpolated modified Kneser-Ney smoothing (Chen &
Goodman 1998), the method ``lmplz`` uses, written as a back-off ARPA file that
``kenlm.Model``, pyctcdecode and flashlight-text load.

- Highest order: raw counts; lower orders: continuation counts (number of distinct words
  seen before the n-gram), except n-grams starting with ``<s>``, which keep raw counts.
- Three discounts per order from its count-of-counts (D1, D2, D3+). When a small corpus makes
  them undefined (a count-of-count is zero or a discount falls outside ``(0, k)``), one
  discount ``n1 / (n1 + 2 n2)`` (or 0.5) is used for all counts: interpolated Kneser-Ney.
- The unigram level interpolates with the uniform distribution over the vocabulary
  (including ``</s>`` and ``<unk>``, excluding ``<s>``, which gets log10 probability -99).
- Because the model is interpolated, every listed probability already holds the lower-order
  mass, and the ARPA back-off weight of a context is exactly its interpolation weight.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

from samu_st.atomic import write_text_atomic
from samu_st.errors import DataError
from samu_st.text import Normalizer

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
NEVER = -99.0  # log10 "probability" ARPA files give <s>, which is never predicted

Ngram = tuple[str, ...]


def count_ngrams(sentences: Iterable[Sequence[str]], order: int) -> list[Counter[Ngram]]:
    """Raw counts of all n-grams of orders 1..``order``; index ``n - 1`` holds order ``n``.

    Each sentence is a sequence of words; ``<s>`` and ``</s>`` are added around it.
    """
    if order < 1:
        raise ValueError(f"order must be >= 1, got {order}")
    counts: list[Counter[Ngram]] = [Counter() for _ in range(order)]
    for words in sentences:
        tokens = (BOS, *words, EOS)
        for n in range(1, order + 1):
            for i in range(len(tokens) - n + 1):
                counts[n - 1][tokens[i : i + n]] += 1
    return counts


def adjusted_counts(raw: list[Counter[Ngram]]) -> list[Counter[Ngram]]:
    """Kneser-Ney counts: raw at the highest order and for n-grams starting with ``<s>``;
    otherwise the number of distinct left extensions seen one order up."""
    adjusted = [Counter(c) for c in raw]
    for n in range(len(raw) - 1):
        left_extensions: Counter[Ngram] = Counter(g[1:] for g in raw[n + 1])
        for gram in raw[n]:
            if gram[0] != BOS:
                adjusted[n][gram] = left_extensions[gram]
    return adjusted


def discounts(counts: Iterable[int]) -> tuple[float, float, float]:
    """Modified Kneser-Ney discounts (D1, D2, D3+) from the counts of one order."""
    of_counts = Counter(min(c, 5) for c in counts)
    t1, t2, t3, t4 = (of_counts[k] for k in (1, 2, 3, 4))
    if t1 and t2 and t3 and t4:
        y = t1 / (t1 + 2 * t2)
        d = (1 - 2 * y * t2 / t1, 2 - 3 * y * t3 / t2, 3 - 4 * y * t4 / t3)
        if all(0.0 < dk < k for k, dk in enumerate(d, start=1)):
            return d
    single = t1 / (t1 + 2 * t2) if t1 and t2 else 0.5
    return (single, single, single)


def _interpolation(
    counts: Counter[Ngram], d: tuple[float, float, float]
) -> tuple[dict[Ngram, float], dict[Ngram, float]]:
    """Discounted probabilities ``(a - D(a)) / S(h)`` of each n-gram and the interpolation
    weight ``sum_k D_k N_k(h) / S(h)`` of each context ``h`` of one order."""
    total: defaultdict[Ngram, int] = defaultdict(int)
    freed: defaultdict[Ngram, float] = defaultdict(float)
    for gram, a in counts.items():
        total[gram[:-1]] += a
        freed[gram[:-1]] += d[min(a, 3) - 1]
    discounted = {g: (a - d[min(a, 3) - 1]) / total[g[:-1]] for g, a in counts.items()}
    gamma = {h: freed[h] / total[h] for h in total}
    return discounted, gamma


def estimate(
    sentences: Iterable[Sequence[str]], order: int = 3
) -> tuple[list[dict[Ngram, float]], list[dict[Ngram, float]]]:
    """Interpolated modified Kneser-Ney: (probabilities, back-off weights) per order, as
    natural numbers in (0, 1], not logs. Back-off weights exist for n-grams seen as contexts."""
    raw = count_ngrams(sentences, order)
    if not raw[0]:
        raise ValueError("no sentences to estimate a language model from")
    adjusted = adjusted_counts(raw)
    del adjusted[0][(BOS,)]  # <s> is a context only, never predicted
    adjusted[0][(UNK,)] = 0
    probs: list[dict[Ngram, float]] = []
    weights: list[dict[Ngram, float]] = []
    for n, counts in enumerate(adjusted, start=1):
        seen = Counter({g: a for g, a in counts.items() if a > 0})
        d = discounts(seen.values())
        discounted, gamma = _interpolation(seen, d)
        if n == 1:
            uniform = gamma[()] / len(counts)
            level = {g: discounted.get(g, 0.0) + uniform for g in counts}
        else:
            lower = probs[-1]
            level = {g: p + gamma[g[:-1]] * lower[g[1:]] for g, p in discounted.items()}
            weights.append(gamma)
        probs.append(level)
    weights.append({})
    return probs, weights


def _log10(x: float) -> str:
    return f"{math.log10(x):.6f}"


def format_arpa(probs: list[dict[Ngram, float]], weights: list[dict[Ngram, float]]) -> str:
    """ARPA text: ``\\data\\`` counts, one section per order (log10 prob, n-gram, log10 bow)."""
    sections = [dict(level) for level in probs]
    sections[0][(BOS,)] = 0.0  # listed (it is a context), never predicted
    lines = ["\\data\\"] + [f"ngram {n}={len(s)}" for n, s in enumerate(sections, start=1)]
    for n, level in enumerate(sections, start=1):
        lines += ["", f"\\{n}-grams:"]
        bows = weights[n - 1]
        for gram in sorted(level):
            logp = f"{NEVER:.6f}" if gram == (BOS,) else _log10(level[gram])
            line = f"{logp}\t{' '.join(gram)}"
            if gram in bows and n < len(sections):
                line += f"\t{_log10(bows[gram])}"
            lines.append(line)
    lines += ["", "\\end\\", ""]
    return "\n".join(lines)


def build_arpa(sentences: Iterable[Sequence[str]], order: int = 3) -> str:
    """The ARPA text of an interpolated modified Kneser-Ney model of ``sentences`` (words)."""
    probs, weights = estimate(sentences, order)
    return format_arpa(probs, weights)


def read_lm_text(path: str | Path, normalizer: Normalizer | None = None) -> list[list[str]]:
    """Sentences of a text file (one per line, words split on whitespace; blank lines
    skipped), after ``normalizer`` if given. ``DataError`` naming the file and line for a
    line that holds ``<s>``, ``</s>`` or ``<unk>`` as a word."""
    sentences: list[list[str]] = []
    try:
        with open(path, encoding="utf-8") as handle:
            for lineno, line in enumerate(handle, start=1):
                words = (normalizer(line) if normalizer else line).split()
                if any(w in (BOS, EOS, UNK) for w in words):
                    raise DataError(path, f"{BOS} {EOS} {UNK} are reserved words", line=lineno)
                if words:
                    sentences.append(words)
    except OSError as err:
        raise DataError(path, f"cannot read: {err.strerror or err}") from None
    except UnicodeDecodeError:
        raise DataError(path, "not UTF-8 text") from None
    if not sentences:
        raise DataError(path, "no sentences: a language model needs at least one line of text")
    return sentences


def write_arpa(
    text_path: str | Path,
    arpa_path: str | Path,
    order: int = 3,
    normalizer: Normalizer | None = None,
) -> Path:
    """Estimate an ``order``-gram model from the text file ``text_path``; write it as ARPA.

    Use the normaliser of the CTC labels so that the LM's words are spelled as the acoustic
    model spells them. The file is written atomically.
    """
    arpa = build_arpa(read_lm_text(text_path, normalizer), order)
    return write_text_atomic(arpa_path, arpa, point="arpa")
