"""Text normalisers and the CTC character vocabulary.

A normaliser is a plain ``str -> str`` callable. The same one must be used to prepare CTC
training labels, to build the vocabulary, and to normalise references before WER/CER
(``samu_st.metrics.wer`` takes it as an argument), so that an error rate is never inflated by
casing or punctuation the model was never asked to produce.

Two normalisers are registered:

- ``irish``: the rules of the XLSR fine-tuning notebook for Irish (ga-IE), reproduced exactly,
  except that the notebook's trailing space is not added and runs of whitespace are collapsed.
- ``generic``: Unicode NFKC, lower case, punctuation (Unicode category ``P*``) replaced by a
  space except apostrophes and hyphens inside a word, whitespace collapsed.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable, Iterable
from pathlib import Path

from samu_st.atomic import write_text_atomic

Normalizer = Callable[[str], str]

WORD_DELIMITER = "|"  # replaces " " in the CTC vocabulary (Wav2Vec2CTCTokenizer's default)
UNK_TOKEN = "[UNK]"
PAD_TOKEN = "[PAD]"  # also the CTC blank: Wav2Vec2ForCTC uses pad_token_id as blank

# The notebook's ``chars_to_ignore_regex`` (training version, which also drops the en dash).
IRISH_CHARS_TO_IGNORE = ',?.!;:"“%‘”()*–'
_IRISH_IGNORE_RE = re.compile("[" + re.escape(IRISH_CHARS_TO_IGNORE) + "]")
_IRISH_UPPER_VOWELS = frozenset("AEIOUÁÉÍÓÚ")

# Typographic apostrophes and hyphens folded into ASCII by the generic normaliser.
_APOSTROPHES = "'’ʼ‘"
_HYPHENS = "-‐‑"
_GENERIC_FOLD = str.maketrans({**dict.fromkeys(_APOSTROPHES, "'"), **dict.fromkeys(_HYPHENS, "-")})


def irish_lower(word: str) -> str:
    """Irish lower-casing of one word: ``nAthair`` → ``n-athair``, ``tUasal`` → ``t-uasal``.

    Initial mutation (n-/t- prefixed to a vowel) is written without a hyphen before a capital
    vowel; lower-casing it would lose the word boundary, so the hyphen is restored.
    """
    if len(word) > 1 and word[0] in ("n", "t") and word[1] in _IRISH_UPPER_VOWELS:
        return word[0] + "-" + word[1:].lower()
    return word.lower()


def normalize_irish(text: str) -> str:
    """The notebook's ``remove_special_characters`` for Irish, without its trailing space."""
    text = text.replace("’ ", " ")
    text = re.sub("’$", "", text)
    text = text.replace("’", "'")
    text = _IRISH_IGNORE_RE.sub("", text)
    return " ".join(irish_lower(word) for word in text.split())


def _is_word_char(char: str) -> bool:
    return unicodedata.category(char)[0] in "LNM"


def normalize_generic(text: str) -> str:
    """Language-independent normalisation for CTC labels and WER/CER references.

    NFKC, lower case; every punctuation character (Unicode category ``P*``) and control
    character becomes a space, except an apostrophe or hyphen with a letter, digit or mark on
    both sides (``don't``, ``well-known`` stay one word); whitespace collapsed.
    """
    text = unicodedata.normalize("NFKC", text).lower()
    # lower() can produce a sequence NFKC would recompose (e.g. from U+0130): normalise again.
    text = unicodedata.normalize("NFKC", text).translate(_GENERIC_FOLD)
    out: list[str] = []
    last = len(text) - 1
    for i, char in enumerate(text):
        category = unicodedata.category(char)
        if category[0] == "P":
            inside = 0 < i < last and _is_word_char(text[i - 1]) and _is_word_char(text[i + 1])
            out.append(char if inside and char in "'-" else " ")
        elif category == "Cc":
            out.append(" ")
        else:
            out.append(char)
    return " ".join("".join(out).split())


NORMALIZERS: dict[str, Normalizer] = {
    "irish": normalize_irish,
    "generic": normalize_generic,
}


def get_normalizer(name: str) -> Normalizer:
    """The registered normaliser called ``name``; ``KeyError`` listing the valid names."""
    try:
        return NORMALIZERS[name]
    except KeyError:
        raise KeyError(
            f"unknown normalizer {name!r}; choose one of: {', '.join(sorted(NORMALIZERS))}"
        ) from None


def build_char_vocab(texts: Iterable[str]) -> dict[str, int]:
    """A CTC character vocabulary built from (already normalised) ``texts``.

    Characters are sorted by code point and numbered from 0; the space becomes the word
    delimiter ``|`` (always present), then ``[UNK]`` and ``[PAD]`` are appended, the order of
    the notebook. A literal ``|`` in the text is read as a word delimiter by the tokenizer.
    """
    chars: set[str] = {" "}
    for text in texts:
        chars.update(text)
    chars.discard(WORD_DELIMITER)
    vocab = {(WORD_DELIMITER if c == " " else c): i for i, c in enumerate(sorted(chars))}
    vocab[UNK_TOKEN] = len(vocab)
    vocab[PAD_TOKEN] = len(vocab)
    return vocab


def save_vocab(vocab: dict[str, int], path: str | Path) -> Path:
    """Write ``vocab`` as the ``vocab.json`` that ``Wav2Vec2CTCTokenizer`` reads.

    ``path`` is the file to write, or a folder, in which ``vocab.json`` is written.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "vocab.json"
    text = json.dumps(vocab, ensure_ascii=False, indent=1) + "\n"
    return write_text_atomic(path, text, point="vocab")
