"""Strict parser for numeric CSV files with a header row (csv module, no pandas).

Rows in messages are numbered as lines of the file, 1-based, the header being row 1.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TextIO

import numpy as np

# Leading columns R (write.csv) and pandas (to_csv) add for the row names / index.
INDEX_COLUMN_NAMES = ("", "rownames")
_MISSING_MARKERS = frozenset({"NA", "N/A", "null", "NULL", "None", "?"})
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def parse_columns(columns: Sequence[str] | str | None) -> list[str] | None:
    """Normalise the ``columns`` argument of :func:`pyrogen.data.load_csv`.

    Args:
        columns: None, a comma-separated string such as ``"a,b"``, or a sequence of names.

    Returns:
        The list of requested names, or None for "every data column".

    Raises:
        TypeError: If ``columns`` or one of its items is not a str.
        ValueError: If ``columns`` is empty, has an empty name, or names a column twice.
    """
    if columns is None:
        return None
    if isinstance(columns, str):
        names = [part.strip() for part in columns.split(",")]
    elif isinstance(columns, Sequence):
        names = list(columns)
        for item in names:
            if not isinstance(item, str):
                raise TypeError(
                    f"columns: expected column names (str), got {item!r} ({type(item).__name__})"
                )
    else:
        raise TypeError(
            f"columns: expected None, a str or a sequence of str, got {type(columns).__name__}"
        )
    if not names or any(not name for name in names):
        raise ValueError(f"columns: expected non-empty column names, got {columns!r}")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"columns: expected each column once, got {repeated} more than once")
    return names


def read_numeric_csv(path: Path, columns: list[str] | None, delimiter: str) -> list[list[float]]:
    """Read the selected columns of a CSV file as floats, validating every selected cell.

    Args:
        path: An existing file with a header row.
        columns: Names to select (already normalised), or None for every column except a
            leading index column named "" or "rownames".
        delimiter: Single-character field separator.

    Returns:
        The rows: a list of n_rows lists of n_columns floats, columns in the order selected.

    Raises:
        ValueError: If the file is empty, not UTF-8 text, malformed, has no data rows, lacks a
            requested column, has a ragged row, or a selected cell is empty, missing,
            non-numeric, non-finite or beyond float32 range (row and column named).
    """
    if not isinstance(delimiter, str) or len(delimiter) != 1:
        raise ValueError(f"delimiter: expected a single character, got {delimiter!r}")
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            records = _records(handle, delimiter, path)
            first = next(records, None)
            if first is None:
                raise ValueError(f"{path}: empty file: expected a header row, got no content")
            header = [name.strip() for name in first[1]]
            selected = _select(header, columns, path)
            rows = [
                _parse_row(fields, line, header, selected, path, suggest=columns is None)
                for line, fields in records
            ]
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: expected UTF-8 text, got undecodable bytes ({exc})") from exc
    if not rows:
        raise ValueError(
            f"{path}: no data rows: expected at least one row after the header, got none"
        )
    return rows


def _records(handle: TextIO, delimiter: str, path: Path) -> Iterator[tuple[int, list[str]]]:
    # strict: a stray quote (e.g. `"1"2`) is a broken file, not a value to guess at.
    reader = csv.reader(handle, delimiter=delimiter, strict=True)
    try:
        for fields in reader:
            # Blank lines carry no record; reporting them as ragged rows would be pedantic.
            if fields:
                yield reader.line_num, fields
    except csv.Error as exc:
        raise ValueError(f"{path}, row {reader.line_num}: malformed CSV ({exc})") from exc


def _select(header: list[str], columns: list[str] | None, path: Path) -> list[int]:
    if columns is None:
        skip_index = len(header) > 1 and header[0] in INDEX_COLUMN_NAMES
        return list(range(1 if skip_index else 0, len(header)))
    available = ", ".join(repr(name) for name in header)
    indices = []
    for name in columns:
        matches = [i for i, candidate in enumerate(header) if candidate == name]
        if not matches:
            raise ValueError(f"{path}: unknown column: expected one of {available}, got {name!r}")
        if len(matches) > 1:
            raise ValueError(
                f"{path}: ambiguous column {name!r}: expected a unique header name, "
                f"got it at positions {matches}"
            )
        indices.append(matches[0])
    return indices


def _parse_row(
    fields: list[str],
    line: int,
    header: list[str],
    selected: list[int],
    path: Path,
    *,
    suggest: bool,
) -> list[float]:
    if len(fields) != len(header):
        raise ValueError(
            f"{path}, row {line}: ragged row: expected {len(header)} fields (as in the header), "
            f"got {len(fields)}"
        )
    values = []
    for index in selected:
        where = f"{path}, row {line}, column {header[index]!r}"
        cell = fields[index].strip()
        if not cell:
            raise ValueError(f"{where}: empty cell: expected a number, got ''")
        try:
            value = float(cell)
        except ValueError:
            if cell in _MISSING_MARKERS:
                raise ValueError(
                    f"{where}: missing value: expected a number, got {cell!r}"
                ) from None
            hint = _columns_hint(header, selected, index) if suggest else ""
            raise ValueError(f"{where}: expected a number, got {cell!r}{hint}") from None
        if not math.isfinite(value):
            raise ValueError(f"{where}: expected a finite number, got {cell!r}")
        if abs(value) > _FLOAT32_MAX:
            raise ValueError(f"{where}: expected a number within float32 range, got {cell!r}")
        values.append(value)
    return values


def _columns_hint(header: list[str], selected: list[int], bad: int) -> str:
    others = [header[i] for i in selected if i != bad]
    if not others:
        return "; select numeric columns with columns=[...]"
    return f"; select numeric columns with columns={others!r}"
