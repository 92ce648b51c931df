"""Property-based tests (hypothesis) of the readers and text tools, on arbitrary input.

What test_tsv.py, test_manifest.py and test_text.py already hold is not repeated here: the TSV
round trip of printable text, the round trip of valid utterances, and the idempotence of the
normalisers. Added here: TSV fields with the characters the dialect must escape, TSV and
manifest readers on arbitrary bytes and arbitrary JSON (only ``DataError`` naming file:line may
come out), and the vocabulary builder on arbitrary sets of texts. Defects found by these
properties are pinned by deterministic ``xfail(strict=True)`` tests at the end.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from samu_st.data.manifest import Utterance, iter_manifest
from samu_st.data.tsv import iter_tsv, read_tsv, write_tsv
from samu_st.errors import DataError
from samu_st.text import PAD_TOKEN, UNK_TOKEN, WORD_DELIMITER, build_char_vocab, save_vocab

FIXTURE_OK = [HealthCheck.function_scoped_fixture]

# --- TSV ---------------------------------------------------------------------------------------

# Field text rich in what the dialect must escape: tab, newline, backslash, quote (no CR: see
# test_tsv_field_with_carriage_return_round_trips). At least 2 columns: a row of ONE empty
# field is a blank line, which the format cannot tell from nothing (pandas skips it too).
_special = st.sampled_from(["\t", "\n", "\\", '"', "\\t", "\\\n", " ", "é", "\u2028", "\x0b"])
_field = st.lists(_special | st.characters(exclude_characters="\r", codec="utf-8"), max_size=8).map(
    "".join
)


@settings(max_examples=150, deadline=None, suppress_health_check=FIXTURE_OK)
@given(
    names=st.lists(_field.filter(bool), min_size=2, max_size=4, unique=True),
    data=st.data(),
)
def test_tsv_escaped_fields_round_trip(tmp_path: Path, names: list[str], data: Any) -> None:
    rows = data.draw(
        st.lists(st.lists(_field, min_size=len(names), max_size=len(names)), max_size=5)
    )
    path = tmp_path / "t.tsv"
    write_tsv(path, names, rows)
    back = read_tsv(path)
    assert [list(r.fields.values()) for r in back] == rows
    assert [r.line for r in back] == sorted({r.line for r in back})  # escaped newlines span lines


_TSV_PIECES = [b"path\tsentence\n", b"a\tb\n", b"a\n", b"a\tb\tc\n", b"\\", b"\t", b"\n", b"\r"]
_TSV_PIECES += [b"\xff", b"\xc3\xa9", b"\x00", b'"', b"\xef\xbb\xbf", b"x"]
_tsv_bytes = st.binary(max_size=200) | st.lists(st.sampled_from(_TSV_PIECES), max_size=20).map(
    b"".join
)


@settings(max_examples=400, deadline=None, suppress_health_check=FIXTURE_OK)
@given(raw=_tsv_bytes, skip_bad_rows=st.booleans())
@example(raw=b"path\tsentence\nclip.mp3\t\xe9t\xe9\n", skip_bad_rows=False)
@example(raw=b"path\tsentence\nx\x00y\tz\n", skip_bad_rows=True)
def test_tsv_reader_on_arbitrary_bytes(tmp_path: Path, raw: bytes, skip_bad_rows: bool) -> None:
    """Rows with their line numbers, or DataError naming the file (and line); nothing else."""
    path = tmp_path / "t.tsv"
    path.write_bytes(raw)
    bad: list[DataError] = []
    try:
        rows = list(iter_tsv(path, ["path"], on_bad_row=bad.append if skip_bad_rows else None))
    except DataError as err:
        assert str(err).startswith(f"{path}:" if err.line is not None else f"{path}: ")
        assert err.line is None or 1 <= err.line <= raw.count(b"\n") + 1
        return
    lines = [r.line for r in rows]
    assert lines == sorted(set(lines)) and all(line >= 2 for line in lines)
    assert all("path" in r.fields for r in rows)
    assert all(e.line is not None and e.line >= 2 for e in bad)


# --- manifests ---------------------------------------------------------------------------------

GOOD: dict[str, Any] = {
    "id": "u1",
    "audio": "clips/a.wav",
    "duration": 1.5,
    "language": "fr",
    "source_text": "un",
    "target_text": "one",
    "speaker": "s1",
    "split": "train",
}
# JSON values, ints bounded to 64 bits and nesting to a few levels (see the xfail tests below).
_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
# Valid records with some fields dropped, replaced by arbitrary JSON, or extra fields added.
_records = st.builds(
    lambda drop, change, extra: {
        **{k: v for k, v in GOOD.items() if k not in drop},
        **change,
        **extra,
    },
    st.sets(st.sampled_from(sorted(GOOD)), max_size=2),
    st.dictionaries(st.sampled_from(sorted(GOOD)), _json, max_size=3),
    st.dictionaries(st.text(max_size=6), _json, max_size=1),
)
_lines = (
    _records.map(lambda r: json.dumps(r).encode())
    | _json.map(lambda v: json.dumps(v).encode())
    | st.binary(max_size=60).filter(lambda b: b"\n" not in b)
)


@settings(max_examples=400, deadline=None, suppress_health_check=FIXTURE_OK)
@given(lines=st.lists(_lines, min_size=1, max_size=4))
@example(lines=[b"\x1c"])  # found by hypothesis: str-whitespace, yet not a blank line
def test_manifest_reader_on_arbitrary_lines(tmp_path: Path, lines: list[bytes]) -> None:
    """Every line gives an Utterance that re-serialises to itself, or a DataError at file:line."""
    path = tmp_path / "m.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    read: list[Utterance] = []
    try:
        for utt in iter_manifest(path):
            read.append(utt)
    except DataError as err:
        assert err.line is not None and 1 <= err.line <= len(lines)
        assert str(err).startswith(f"{path}:{err.line}: ")
        assert len(read) < err.line  # lines before the bad one were read
        return
    for utt in read:
        back = json.loads(utt.to_json().encode("utf-8"))
        assert Utterance(**back) == utt and utt.duration > 0
    assert len(read) == sum(1 for line in lines if line.strip())


# --- vocabulary --------------------------------------------------------------------------------

_texts = st.lists(st.text(st.characters(codec="utf-8"), max_size=20), max_size=6)


@settings(max_examples=200, deadline=None)
@given(texts=_texts)
def test_vocab_covers_every_char_with_contiguous_ids(texts: list[str]) -> None:
    vocab = build_char_vocab(texts)
    assert sorted(vocab.values()) == list(range(len(vocab)))  # contiguous from 0
    assert list(vocab)[-2:] == [UNK_TOKEN, PAD_TOKEN] and WORD_DELIMITER in vocab
    chars = {WORD_DELIMITER if c == " " else c for t in texts for c in t}
    assert chars <= set(vocab)
    assert len(vocab) == len(chars | {WORD_DELIMITER}) + 2  # nothing else
    assert build_char_vocab(reversed(texts)) == vocab  # order of the texts does not matter
    assert build_char_vocab(texts + texts) == vocab


@settings(max_examples=50, deadline=None, suppress_health_check=FIXTURE_OK)
@given(texts=_texts)
def test_saved_vocab_reads_back(tmp_path: Path, texts: list[str]) -> None:
    vocab = build_char_vocab(texts)
    path = save_vocab(vocab, tmp_path / "vocab.json")
    assert json.loads(path.read_text(encoding="utf-8")) == vocab


# --- defects found by the properties above ---------------------------------------------------


def test_tsv_field_with_carriage_return_round_trips(tmp_path: Path) -> None:
    write_tsv(tmp_path / "t.tsv", ["a"], [["x\ry"]])
    assert read_tsv(tmp_path / "t.tsv")[0].fields == {"a": "x\ry"}


@pytest.mark.parametrize("line", ["big_int", "deep"])
def test_manifest_crashes_only_with_data_error(tmp_path: Path, line: str) -> None:
    text = json.dumps({**GOOD, "duration": 10**400}) if line == "big_int" else "[" * 100_000
    (tmp_path / "m.jsonl").write_text(text + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"m\.jsonl:1: "):
        list(iter_manifest(tmp_path / "m.jsonl"))


def test_manifest_rejects_lone_surrogates(tmp_path: Path) -> None:
    (tmp_path / "m.jsonl").write_text(json.dumps({**GOOD, "speaker": "\ud800"}) + "\n")
    try:
        utts = list(iter_manifest(tmp_path / "m.jsonl"))
    except DataError as err:
        assert err.line == 1
        return
    utts[0].to_json().encode("utf-8")
