import csv
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from samu_st.data.tsv import iter_tsv, read_tsv, tsv_columns, write_tsv
from samu_st.errors import DataError


def write_bytes(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def test_rows_with_line_numbers_empty_fields_and_escapes(tmp_path: Path) -> None:
    tsv = write_bytes(
        tmp_path / "t.tsv",
        'path\tsentence\tage\na.mp3\tIl a dit "oui"\t\n\nb.mp3\ttab\\\there\tforties\n',
    )
    rows = read_tsv(tsv, ["path", "sentence"])
    assert [r.line for r in rows] == [2, 4]
    assert rows[0].fields == {"path": "a.mp3", "sentence": 'Il a dit "oui"', "age": ""}
    assert rows[1].fields["sentence"] == "tab\there"
    assert tsv_columns(tsv) == ["path", "sentence", "age"]


def test_reads_like_the_official_pandas_call(tmp_path: Path) -> None:
    text = (
        "client_id\tpath\tsentence\n"
        'c1\tx.mp3\t"quoted" start\n'
        "c2\ty.mp3\tback\\\\slash and \\\ttab\n"
        "\tz.mp3\t\n"
        "c4\tw.mp3\tl'apostrophe — ünïcode 你好\n"
    )
    tsv = write_bytes(tmp_path / "validated.tsv", text)
    # get_covost_splits.py's load_df_from_tsv
    df = pd.read_csv(
        tsv,
        sep="\t",
        header=0,
        encoding="utf-8",
        escapechar="\\",
        quoting=csv.QUOTE_NONE,
        na_filter=False,
    )
    ours = [r.fields for r in read_tsv(tsv)]
    assert ours == df.astype(str).to_dict("records")
    assert ours[1]["sentence"] == "back\\slash and \ttab"


def test_bom_is_ignored(tmp_path: Path) -> None:
    tsv = write_bytes(tmp_path / "t.tsv", "\ufeffpath\tsentence\na\tb\n")
    assert tsv_columns(tsv) == ["path", "sentence"]


def test_not_utf8_names_file_and_line(tmp_path: Path) -> None:
    tsv = write_bytes(tmp_path / "train.tsv", "path\tsentence\na\tok\nb\tcafé\n", "latin-1")
    with pytest.raises(DataError) as err:
        read_tsv(tsv)
    assert err.value.line == 3
    assert str(err.value).startswith(f"{tsv}:3: not UTF-8")


def test_missing_columns_lists_them_and_the_columns_found(tmp_path: Path) -> None:
    tsv = write_bytes(tmp_path / "dev.tsv", "client_id\tpath\nc\ta.mp3\n")
    with pytest.raises(DataError) as err:
        read_tsv(tsv, ["path", "sentence", "translation"])
    msg = str(err.value)
    assert msg.startswith(f"{tsv}:1: missing required column(s) sentence, translation")
    assert "columns found: client_id, path" in msg


@pytest.mark.parametrize(
    ("line", "found", "hint"),
    [("a.mp3\tone\textra\n", 3, "extra tab"), ("a.mp3\n", 1, "missing field")],
)
def test_wrong_field_count_names_the_line(tmp_path: Path, line: str, found: int, hint: str) -> None:
    tsv = write_bytes(tmp_path / "t.tsv", "path\tsentence\nok.mp3\tfine\n" + line + "z\ty\n")
    with pytest.raises(DataError) as err:
        read_tsv(tsv)
    assert err.value.line == 3
    assert f"expected 2 tab-separated fields, found {found}" in str(err.value)
    assert hint in str(err.value)
    bad: list[DataError] = []
    rows = list(iter_tsv(tsv, on_bad_row=bad.append))
    assert [r.line for r in rows] == [2, 4]
    assert [e.line for e in bad] == [3]


def test_empty_and_missing_files(tmp_path: Path) -> None:
    empty = write_bytes(tmp_path / "e.tsv", "")
    with pytest.raises(DataError, match="empty file"):
        read_tsv(empty)
    with pytest.raises(DataError, match="TSV file not found"):
        read_tsv(tmp_path / "nope.tsv")
    dup = write_bytes(tmp_path / "d.tsv", "path\tpath\n")
    with pytest.raises(DataError, match="duplicate column"):
        read_tsv(dup)


# Printable text: no control characters (tab, newline, CR), no surrogates.
_text = st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=12)


@st.composite
def tables(draw: st.DrawFn) -> tuple[list[str], list[list[str]]]:
    names = draw(st.lists(_text.filter(bool), min_size=2, max_size=4, unique=True))
    rows = draw(st.lists(st.lists(_text, min_size=len(names), max_size=len(names)), max_size=6))
    return names, rows


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(table=tables())
def test_write_then_read_round_trips(
    tmp_path: Path, table: tuple[list[str], list[list[str]]]
) -> None:
    names, rows = table
    path = tmp_path / "rt.tsv"
    write_tsv(path, names, rows)
    assert tsv_columns(path) == names
    back = read_tsv(path)
    assert [list(r.fields.values()) for r in back] == rows
    assert [r.line for r in back] == list(range(2, len(rows) + 2))
