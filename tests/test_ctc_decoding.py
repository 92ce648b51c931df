"""CTC greedy decoding, the pure-Python ARPA estimator, and LM beam search."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import Wav2Vec2CTCTokenizer

from samu_st.decoding.ctc import (
    CtcLmDecoder,
    LmDecodingOptions,
    ctc_greedy_decode,
    greedy_ids,
)
from samu_st.decoding.ngram import (
    BOS,
    EOS,
    adjusted_counts,
    build_arpa,
    count_ngrams,
    discounts,
    estimate,
    read_lm_text,
    write_arpa,
)
from samu_st.errors import DataError
from samu_st.text import build_char_vocab, save_vocab

LM_TEXT = [
    "the cat sat on the mat",
    "the cat ate the fish",
    "a cat and a dog",
    "the dog sat on the log",
    "my cat likes the mat",
    "the fish likes the cat",
]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Wav2Vec2CTCTokenizer:
    path = save_vocab(build_char_vocab([*LM_TEXT, "kat z"]), tmp_path_factory.mktemp("v"))
    return Wav2Vec2CTCTokenizer(
        str(path), unk_token="[UNK]", pad_token="[PAD]", word_delimiter_token="|"
    )


@pytest.fixture(scope="module")
def arpa(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("lm")
    (folder / "lm.txt").write_text("\n".join(LM_TEXT) + "\n\n", encoding="utf-8")
    return write_arpa(folder / "lm.txt", folder / "lm.arpa", order=3)


# ----------------------------------------------------------------------------- greedy


def test_greedy_ids_collapse_blank_and_lengths() -> None:
    blank = 0
    ids = torch.tensor([[1, 1, 0, 1, 2, 2, 0, 0, 3, 3], [2, 0, 2, 2, 3, 3, 3, 1, 1, 1]])
    logits = torch.nn.functional.one_hot(ids, 4).float()
    assert greedy_ids(logits, torch.tensor([10, 4]), blank) == [[1, 1, 2, 3], [2, 2]]
    assert greedy_ids(logits, None, blank)[1] == [2, 2, 3, 1]
    assert greedy_ids(logits.numpy(), np.array([0, 1]), blank) == [[], [2]]
    with pytest.raises(ValueError, match="lengths"):
        greedy_ids(logits, torch.tensor([11, 2]), blank)


def test_greedy_decode_equals_transformers_batch_decode(tokenizer: Wav2Vec2CTCTokenizer) -> None:
    gen = torch.Generator().manual_seed(0)
    vocab_size = tokenizer.pad_token_id + 1  # the model's outputs: vocab.json, not added tokens
    logits = torch.randn(4, 30, vocab_size, generator=gen) * 3
    lengths = torch.tensor([30, 17, 5, 1])
    ours = ctc_greedy_decode(logits, lengths, tokenizer)
    for row, n, text in zip(logits, lengths, ours, strict=True):
        reference = tokenizer.decode(row[:n].argmax(-1).tolist())  # HF groups, drops blanks
        assert text == " ".join(reference.replace("[UNK]", "⁇").split())
    # padded frames never leak: same result as decoding each row alone
    for b in range(4):
        alone = ctc_greedy_decode(logits[b : b + 1, : lengths[b]], None, tokenizer)
        assert alone == [ours[b]]


def _frames(vocab: dict[str, int], text: str, confuse: tuple[str, str] | None = None) -> np.ndarray:
    """Two frames per character then a blank; ``confuse`` makes the acoustics prefer a wrong
    character (log-odds 0.4) for one letter."""
    rows = []
    for ch in text:
        token = "|" if ch == " " else ch
        for _ in range(2):
            row = np.full(len(vocab), -4.0)
            row[vocab[token]] = 4.0
            if confuse and ch == confuse[0]:
                row[vocab[token]], row[vocab[confuse[1]]] = 2.0, 2.4
            rows.append(row)
        blank = np.full(len(vocab), -4.0)
        blank[vocab["[PAD]"]] = 4.0
        rows.append(blank)
    return np.stack(rows)


def _batch(tokenizer: Wav2Vec2CTCTokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    vocab = tokenizer.get_vocab()
    vocab = {k: v for k, v in vocab.items() if v <= tokenizer.pad_token_id}
    rows = [_frames(vocab, "the cat sat", confuse=("c", "k")), _frames(vocab, "a dog")]
    frames = max(len(r) for r in rows)
    logits = np.zeros((2, frames, len(vocab)))
    logits[:, :, vocab["z"]] = 9.0  # garbage in the padding, must not be decoded
    for b, row in enumerate(rows):
        logits[b, : len(row)] = row
    return torch.tensor(logits, dtype=torch.float32), torch.tensor([len(r) for r in rows])


def test_greedy_on_constructed_example(tokenizer: Wav2Vec2CTCTokenizer) -> None:
    logits, lengths = _batch(tokenizer)
    assert ctc_greedy_decode(logits, lengths, tokenizer) == ["the kat sat", "a dog"]


# ----------------------------------------------------------------------------- n-gram LM


def test_adjusted_counts_and_discounts() -> None:
    raw = count_ngrams([s.split() for s in LM_TEXT], 3)
    adjusted = adjusted_counts(raw)
    assert raw[0][("cat",)] == 5
    assert adjusted[0][("cat",)] == 3  # continuation count: after "the", "a", "my"
    assert adjusted[1][(BOS, "the")] == raw[1][(BOS, "the")] == 4  # <s> n-grams keep raw
    assert adjusted[2] == raw[2]
    d1, d2, d3 = discounts([1] * 10 + [2] * 4 + [3] * 2 + [4])
    y = 10 / 18
    assert (d1, d2, d3) == pytest.approx((1 - 2 * y * 4 / 10, 2 - 3 * y * 2 / 4, 3 - 4 * y / 2))
    assert discounts([1, 1, 2]) == (pytest.approx(0.5),) * 3  # too sparse: one discount


def test_estimate_distributions_sum_to_one() -> None:
    probs, weights = estimate([s.split() for s in LM_TEXT], order=3)
    vocab = [g for g in probs[0]]
    assert sum(probs[0].values()) == pytest.approx(1.0)
    assert (BOS,) not in probs[0] and ("<unk>",) in probs[0]

    def p(word: str, context: tuple[str, ...]) -> float:  # ARPA back-off semantics
        gram = (*context, word)
        if gram in probs[len(gram) - 1]:
            return probs[len(gram) - 1][gram]
        return weights[len(context) - 1].get(context, 1.0) * p(word, context[1:])

    for context in [(BOS,), ("the",), (BOS, "the"), ("the", "cat"), ("on", "the"), ("dog",)]:
        assert sum(p(w[0], context) for w in vocab) == pytest.approx(1.0)


def test_arpa_syntax_and_kenlm_scores(arpa: Path) -> None:
    text = arpa.read_text(encoding="utf-8")
    lines = text.splitlines()
    assert lines[0] == "\\data\\" and lines[-1] == "\\end\\"
    declared = {int(n): int(c) for n, c in (ln[6:].split("=") for ln in lines[1:4])}
    sections = Counter()
    order = 0
    for line in lines:
        if line.endswith("-grams:"):
            order = int(line[1])
        elif order and line and not line.startswith("\\"):
            fields = line.split("\t")
            assert len(fields[1].split()) == order and float(fields[0]) <= 0.0
            sections[order] += 1
    assert dict(sections) == declared
    kenlm = pytest.importorskip("kenlm")
    model = kenlm.Model(str(arpa))
    assert model.order == 3
    seen, unseen = model.score("the cat sat on the mat"), model.score("mat the on sat cat the")
    assert seen > unseen + 3.0  # a thousand times more likely
    assert model.score("the dog sat on the mat") > model.score("the dog sat on the dog")
    # kenlm's back-off reading of our file sums to one in every context
    vocab = [*sorted({w for s in LM_TEXT for w in s.split()}), EOS, "<unk>"]
    for context in [[], ["the"], ["the", "cat"], ["zebra"]]:
        state = kenlm.State()
        model.BeginSentenceWrite(state)
        for word in context:
            out = kenlm.State()
            model.BaseScore(state, word, out)
            state = out
        total = sum(10 ** model.BaseScore(state, w, kenlm.State()) for w in vocab)
        assert total == pytest.approx(1.0, abs=1e-5)


def test_kenlm_score_equals_our_probabilities(arpa: Path) -> None:
    kenlm = pytest.importorskip("kenlm")
    probs, _ = estimate([s.split() for s in LM_TEXT], order=3)
    model = kenlm.Model(str(arpa))
    full = list(model.full_scores("the cat sat", bos=True, eos=True))
    assert full[1][0] == pytest.approx(math.log10(probs[2][(BOS, "the", "cat")]), abs=1e-5)
    assert full[2][0] == pytest.approx(math.log10(probs[2][("the", "cat", "sat")]), abs=1e-5)


def test_read_lm_text_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_text("fine line\nhas <s> inside\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.txt:2"):
        read_lm_text(bad)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(DataError, match=r"empty\.txt"):
        read_lm_text(empty)
    bad.write_text("fine line\n", encoding="utf-8")
    assert read_lm_text(bad, str.upper) == [["FINE", "LINE"]]


def test_build_arpa_unigram_model() -> None:
    text = build_arpa([["a", "b"], ["a"]], order=1)
    assert "ngram 1=5" in text and "\\2-grams:" not in text


# ----------------------------------------------------------------------------- LM beam search


@pytest.mark.parametrize("backend", ["pyctcdecode", "flashlight"])
def test_lm_decoding_fixes_a_word_greedy_gets_wrong(
    tokenizer: Wav2Vec2CTCTokenizer, arpa: Path, backend: str
) -> None:
    pytest.importorskip("kenlm")
    pytest.importorskip("pyctcdecode" if backend == "pyctcdecode" else "flashlight.lib.text")
    logits, lengths = _batch(tokenizer)
    options = LmDecodingOptions(backend="flashlight" if backend == "flashlight" else "pyctcdecode")
    decoder = CtcLmDecoder(tokenizer, arpa, logits.shape[-1], options)
    assert decoder.decode(logits, lengths) == ["the cat sat", "a dog"]
    assert decoder.decode(logits[:1, :0], torch.tensor([0])) == [""]


def test_lm_decoder_missing_arpa(tokenizer: Wav2Vec2CTCTokenizer, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"missing\.arpa"):
        CtcLmDecoder(tokenizer, tmp_path / "missing.arpa", 10)
