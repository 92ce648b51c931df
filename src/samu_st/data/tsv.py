"""Tab-separated tables as Common Voice and CoVoST-2 ship them, read the way their tools read them.

The official scripts (``get_covost_splits.py``, fairseq's ``load_df_from_tsv``) call pandas with
``sep="\\t", header=0, encoding="utf-8", escapechar="\\\\", quoting=csv.QUOTE_NONE,
na_filter=False``: a header row, no quoting (a ``"`` is an ordinary character), a backslash makes
the next character literal (so ``\\<tab>`` is a tab inside a field), and empty fields stay empty
strings. This module reads the same dialect with the standard ``csv`` module, keeps the line
number of every row, and turns every problem into a :class:`~samu_st.errors.DataError` naming
the file and line. Blank lines are skipped, as pandas does.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from samu_st.atomic import atomic_write
from samu_st.errors import DataError


class CommonVoiceDialect(csv.Dialect):
    """pandas' ``sep="\\t", quoting=QUOTE_NONE, escapechar="\\\\"`` as a ``csv`` dialect."""

    delimiter = "\t"
    quoting = csv.QUOTE_NONE
    quotechar = '"'  # not special when reading; escaped when writing, as pandas' to_csv does
    escapechar = "\\"
    doublequote = False
    skipinitialspace = False
    lineterminator = "\n"
    strict = True


_BOM = "\ufeff"


@dataclass(frozen=True)
class TsvRow:
    """One data row of a TSV file."""

    line: int  # 1-based line number in the file where the row starts (the header is line 1)
    fields: dict[str, str]  # column name -> value ("" for an empty field)


def _decoded_lines(path: Path) -> Iterator[str]:
    """The file's lines as text; a line that is not UTF-8 raises DataError naming it."""
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise DataError(
                    path,
                    f"not UTF-8 text (byte {raw[err.start]:#04x} at column {err.start + 1})",
                    lineno,
                ) from None
            yield text[1:] if lineno == 1 and text.startswith(_BOM) else text


def _open(path: str | Path) -> Path:
    p = Path(path)
    if not p.exists():
        raise DataError(p, "TSV file not found")
    if p.is_dir():
        raise DataError(p, "is a directory, expected a TSV file")
    return p


def _check_header(path: Path, header: list[str], required: Sequence[str]) -> None:
    if not header or header == [""]:
        raise DataError(path, "empty header row, expected tab-separated column names", 1)
    duplicates = sorted({c for c in header if header.count(c) > 1})
    if duplicates:
        raise DataError(path, f"duplicate column name(s): {', '.join(duplicates)}", 1)
    missing = [c for c in required if c not in header]
    if missing:
        raise DataError(
            path,
            f"missing required column(s) {', '.join(missing)}; columns found: {', '.join(header)}",
            1,
        )


def tsv_columns(path: str | Path) -> list[str]:
    """The column names of a TSV file (its header row)."""
    p = _open(path)
    try:
        header = next(csv.reader(_decoded_lines(p), dialect=CommonVoiceDialect))
    except StopIteration:
        raise DataError(p, "empty file, expected a header row") from None
    except csv.Error as err:
        raise DataError(p, f"malformed header row ({err})", 1) from None
    _check_header(p, header, ())
    return header


def iter_tsv(
    path: str | Path,
    required: Sequence[str] = (),
    on_bad_row: Callable[[DataError], None] | None = None,
) -> Iterator[TsvRow]:
    """Yield the data rows of ``path`` as :class:`TsvRow` (column name -> string).

    Raises :class:`DataError` for a file that is missing, empty, not UTF-8 (naming the line) or
    lacks one of the ``required`` columns (listing the columns found). A row with more or fewer
    fields than the header (a stray tab, a cut line) raises too, unless ``on_bad_row`` is given:
    then it receives the error and the row is skipped.
    """
    p = _open(path)
    lines = _decoded_lines(p)
    reader = csv.reader(lines, dialect=CommonVoiceDialect)
    header: list[str] | None = None
    last_line = 0
    while True:
        try:
            values = next(reader)
        except StopIteration:
            break
        except csv.Error as err:
            bad = DataError(p, f"malformed row ({err})", last_line + 1)
            last_line = reader.line_num
            if on_bad_row is None or header is None:
                raise bad from None
            on_bad_row(bad)
            continue
        start, last_line = last_line + 1, reader.line_num
        if header is None:
            header = values
            _check_header(p, header, required)
            continue
        if not values:  # blank line
            continue
        if len(values) != len(header):
            kind = "extra tab(s)?" if len(values) > len(header) else "missing field(s)?"
            bad = DataError(
                p,
                f"expected {len(header)} tab-separated fields, found {len(values)} ({kind})",
                start,
            )
            if on_bad_row is None:
                raise bad
            on_bad_row(bad)
            continue
        yield TsvRow(start, dict(zip(header, values, strict=True)))
    if header is None:
        raise DataError(p, "empty file, expected a header row")


def read_tsv(path: str | Path, required: Sequence[str] = ()) -> list[TsvRow]:
    """All rows of a TSV file; the first problem raises :class:`DataError`."""
    return list(iter_tsv(path, required))


def write_tsv(
    path: str | Path, columns: Sequence[str], rows: Iterable[Mapping[str, str] | Sequence[str]]
) -> int:
    """Write a TSV in the same dialect (escaping tabs, newlines and backslashes). Returns rows."""
    n = 0

    def write(tmp: Path) -> None:
        nonlocal n
        with tmp.open("w", encoding="utf-8", newline="") as fh:
            fh.write("\t".join(_escape(c) for c in columns) + "\n")
            for row in rows:
                values = [row[c] for c in columns] if isinstance(row, Mapping) else list(row)
                fh.write("\t".join(_escape(v) for v in values) + "\n")
                n += 1

    atomic_write(path, write, point="tsv")
    return n


_SPECIAL = re.compile(r'([\\\t\n\r"])')


def _escape(value: str) -> str:
    """Backslash-escape what the reader's dialect treats specially (csv's writer misses \\r)."""
    return _SPECIAL.sub(r"\\\1", value)
