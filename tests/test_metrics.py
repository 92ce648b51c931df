"""Metrics against the reference tools: sacrebleu's CLI, jiwer; group means and TRFGap."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import jiwer
import numpy as np
import pytest
import torch

from samu_st.metrics import (
    GroupScores,
    bleu_by_language,
    cer,
    corpus_bleu,
    group_means,
    retrieval_recall_at_1,
    trfgap,
    wer,
)
from samu_st.text import get_normalizer

DATA = Path(__file__).parent / "data"
REF, HYP = DATA / "bleu_ref.en.txt", DATA / "bleu_hyp.en.txt"


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def _sacrebleu_cli(ref: Path, hyp: Path) -> float:
    exe = shutil.which("sacrebleu")
    cmd = [exe] if exe else [sys.executable, "-m", "sacrebleu"]
    out = subprocess.run(
        [*cmd, str(ref), "-i", str(hyp), "-b", "-w", "4"],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.strip())


def test_corpus_bleu_equals_sacrebleu_cli() -> None:
    result = corpus_bleu(_lines(HYP), _lines(REF))
    assert result.score == pytest.approx(_sacrebleu_cli(REF, HYP), abs=0.01)
    assert result.score == pytest.approx(49.9, abs=0.05)  # fixed files: the value is known
    assert "tok:13a" in result.signature and "nrefs:1" in result.signature


def test_corpus_bleu_perfect_and_mismatched_lengths() -> None:
    refs = _lines(REF)
    assert corpus_bleu(refs, refs).score == pytest.approx(100.0)
    with pytest.raises(ValueError, match="hypotheses"):
        corpus_bleu(refs[:3], refs)


def test_bleu_by_language_matches_per_language_corpus_bleu() -> None:
    hyps, refs = _lines(HYP), _lines(REF)
    scores, signature = bleu_by_language(
        {"fr": hyps[:5], "nl": hyps[5:], "xx": refs}, {"fr": refs[:5], "nl": refs[5:], "xx": refs}
    )
    assert scores.per_language["fr"] == pytest.approx(corpus_bleu(hyps[:5], refs[:5]).score)
    assert scores.per_language["xx"] == pytest.approx(100.0)
    # xx is in no group; mid has no language: missing, not zero
    assert scores.high == pytest.approx(scores.per_language["fr"])
    assert scores.low == pytest.approx(scores.per_language["nl"])
    assert scores.mid is None
    assert scores.trfgap == pytest.approx(scores.per_language["fr"] - scores.per_language["nl"])
    assert "tok:13a" in signature


def test_group_means_with_missing_group() -> None:
    means = group_means({"fr": 30.0, "de": 20.0, "nl": 10.0, "ta": 4.0, "ja": 1.0})
    assert means["high"] == pytest.approx(25.0)
    assert means["mid"] is None
    assert means["low"] == pytest.approx(5.0)
    assert group_means({})["high"] is None


def test_trfgap() -> None:
    assert trfgap(25.0, 5.0) == pytest.approx(20.0)
    assert trfgap(None, 5.0) is None
    assert trfgap(25.0, None) is None
    scores = GroupScores.from_per_language({"fr": 30.0, "es": 10.0, "it": 12.0, "cy": 2.0})
    assert (scores.high, scores.mid, scores.low) == (20.0, 12.0, 2.0)
    assert scores.trfgap == pytest.approx(18.0)
    assert GroupScores.from_per_language({"it": 12.0}).trfgap is None


def test_wer_cer_equal_jiwer_after_normaliser() -> None:
    refs = ["Tá an nAthair anseo.", "Dia dhuit, a chara!", "Cé’n t-am é?"]
    hyps = ["ta an n-athair anseo", "dia duit a chara", "cé'n t-am é"]
    irish = get_normalizer("irish")
    refs_n = [irish(r) for r in refs]
    assert wer(hyps, refs, irish) == pytest.approx(jiwer.wer(refs_n, hyps))
    assert cer(hyps, refs, irish) == pytest.approx(jiwer.cer(refs_n, hyps))
    # two substituted words ("ta", "duit") in 11 reference words
    assert wer(hyps, refs, irish) == pytest.approx(2 / 11)
    assert wer(hyps, refs) > wer(hyps, refs, irish)  # unnormalised punctuation counts as errors


def test_wer_is_a_real_wer() -> None:
    # substitution + insertion over 3 reference words: can exceed 1 only with insertions
    assert wer(["a x b c"], ["a b d"]) == pytest.approx(2 / 3)
    assert wer(["a b d"], ["a b d"]) == 0.0


def test_retrieval_recall_at_1() -> None:
    gen = torch.Generator().manual_seed(0)
    text = torch.randn(50, 16, generator=gen)
    speech = text * 3.0 + 0.01 * torch.randn(50, 16, generator=gen)  # cosine ignores scale
    assert retrieval_recall_at_1(speech, text) == 1.0
    # swap two speech rows: exactly those two miss
    swapped = speech.clone()
    swapped[[0, 1]] = speech[[1, 0]]
    assert retrieval_recall_at_1(swapped, text) == pytest.approx(48 / 50)
    assert retrieval_recall_at_1(swapped.numpy(), text.numpy(), chunk=7) == pytest.approx(0.96)


def test_retrieval_recall_matches_loop() -> None:
    rng = np.random.default_rng(1)
    speech, text = rng.normal(size=(40, 8)), rng.normal(size=(40, 8))
    s = speech / np.linalg.norm(speech, axis=1, keepdims=True)
    t = text / np.linalg.norm(text, axis=1, keepdims=True)
    expected = np.mean([np.argmax(t @ s[i]) == i for i in range(40)])
    assert retrieval_recall_at_1(speech, text, chunk=16) == pytest.approx(expected)
    with pytest.raises(ValueError):
        retrieval_recall_at_1(speech, text[:5])
