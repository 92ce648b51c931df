"""Normalisers (golden examples from the notebook, properties) and the CTC vocabulary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from samu_st.text import (
    NORMALIZERS,
    build_char_vocab,
    get_normalizer,
    irish_lower,
    normalize_generic,
    normalize_irish,
    save_vocab,
)


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("nAthair", "n-athair"),
        ("tUasal", "t-uasal"),
        ("nÓg", "n-óg"),
        ("tÉan", "t-éan"),
        ("nathair", "nathair"),
        ("NAthair", "nathair"),  # rule needs a lower-case n
        ("nBhaile", "nbhaile"),  # not a vowel
        ("n", "n"),
        ("Éire", "éire"),
    ],
)
def test_irish_lower(word: str, expected: str) -> None:
    assert irish_lower(word) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Tá an nAthair ag an tUasal Ó Briain.", "tá an n-athair ag an t-uasal ó briain"),
        ("Cé’n t-am é?", "cé'n t-am é"),  # ’ inside a word becomes '
        ("rock ’n’ roll", "rock 'n roll"),  # "’ " becomes a space
        ("Dia dhuit’", "dia dhuit"),  # trailing ’ removed
        ("“Sin é!” ar sise; (go deo) – 100% * ‘x’", "sin é ar sise go deo 100 x"),
        ("  Slán   go   fóill  ", "slán go fóill"),  # no notebook trailing space
    ],
)
def test_normalize_irish_golden(text: str, expected: str) -> None:
    assert normalize_irish(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hello, World!  Don't “stop”.", "hello world don't stop"),
        ("A well-known -- 'quoted' word", "a well-known quoted word"),
        ("l’homme", "l'homme"),  # typographic apostrophe folded
        ("ﬁne Ｓｔｒａßｅ", "fine straße"),  # NFKC
        ("你好，世界。", "你好 世界"),
        ("line\none\ttab", "line one tab"),
    ],
)
def test_normalize_generic_golden(text: str, expected: str) -> None:
    assert normalize_generic(text) == expected


def test_get_normalizer() -> None:
    assert get_normalizer("irish") is normalize_irish
    with pytest.raises(KeyError, match="generic"):
        get_normalizer("klingon")


any_text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40
) | st.lists(st.sampled_from(["nA", "tU", "’", "’ ", " ", "-", "'", "Á", "x", ".", "İ"])).map(
    "".join
)


@settings(max_examples=300, deadline=None)
@given(any_text)
@pytest.mark.parametrize("name", sorted(NORMALIZERS))
def test_normalizer_properties(name: str, text: str) -> None:
    normalize = get_normalizer(name)
    out = normalize(text)
    assert normalize(out) == out  # idempotent
    assert out == out.lower()  # the rules keep no upper case ("n-"/"t-" are lower case)
    assert out == out.strip() and "  " not in out
    vocab = build_char_vocab([out])
    assert all(c in vocab for c in out.replace(" ", "|"))


def test_build_char_vocab_notebook_order() -> None:
    vocab = build_char_vocab(["cill dubh", "n-athair"])
    chars = sorted(set("cill dubh n-athair"))
    assert list(vocab)[: len(chars)] == ["|" if c == " " else c for c in chars]
    assert vocab["|"] == 0 and vocab["-"] == 1
    assert list(vocab)[-2:] == ["[UNK]", "[PAD]"]
    assert sorted(vocab.values()) == list(range(len(vocab)))
    assert build_char_vocab(["ab"]) == {"|": 0, "a": 1, "b": 2, "[UNK]": 3, "[PAD]": 4}


def test_vocab_round_trip_through_wav2vec2_tokenizer(tmp_path: Path) -> None:
    from transformers import Wav2Vec2CTCTokenizer

    texts = [normalize_irish(t) for t in ["Tá an nAthair i gCill Dara.", "Cé’n t-am é?"]]
    vocab = build_char_vocab(texts)
    path = save_vocab(vocab, tmp_path)
    assert path == tmp_path / "vocab.json"
    assert json.loads(path.read_text(encoding="utf-8")) == vocab
    tok = Wav2Vec2CTCTokenizer(
        str(path), unk_token="[UNK]", pad_token="[PAD]", word_delimiter_token="|"
    )
    assert tok.pad_token_id == vocab["[PAD]"] and tok.unk_token_id == vocab["[UNK]"]
    for text in texts:
        ids = tok(text).input_ids
        assert ids == [vocab["|" if c == " " else c] for c in text]
        # labels are not CTC output: decode without grouping, or "cill" loses an l
        assert tok.decode(ids, group_tokens=False) == text
    assert tok("qz").input_ids == [vocab["[UNK]"]] * 2
