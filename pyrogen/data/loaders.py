"""Load numeric data files (CSV/TSV, .npy/.npz, IDX) into validated float32 tensors."""

from __future__ import annotations

import contextlib
import gzip
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from pyrogen.checks import as_tensor, physical_memory
from pyrogen.data._csv import parse_columns, read_numeric_csv
from pyrogen.data._files import PathLike, existing_file, is_gzip, read_at_most
from pyrogen.data._idx import looks_like_idx, read_idx
from pyrogen.data._npy import read_array
from pyrogen.io import atomic_write

_TEXT_DELIMITERS = {".csv": ",", ".tsv": "\t", ".txt": ","}
_NUMPY_SUFFIXES = (".npy", ".npz")
_IDX_SUFFIXES = ("-ubyte", ".idx")
SUPPORTED_FORMATS = (
    ".csv",
    ".tsv",
    ".txt",
    ".npy",
    ".npz",
    ".idx",
    "*-ubyte",
    ".gz (gzip-compressed IDX)",
)


def load_csv(
    path: PathLike, columns: Sequence[str] | str | None = None, *, delimiter: str = ","
) -> torch.Tensor:
    """Load numeric columns of a delimited text file with a header row.

    Args:
        path: The file; the first non-blank row is the header (names may be quoted).
        columns: Names of the columns to load, as a list or a comma-separated string
            ``"a,b"``; None loads every column except a leading R/pandas index column
            (named "" or "rownames").
        delimiter: Single-character field separator (``"\\t"`` for TSV).

    Returns:
        Tensor of shape (n_rows, n_columns), float32, columns in the requested order.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        TypeError: If ``columns`` is neither None, a str nor a sequence of str.
        ValueError: If the file is empty or has only a header, a requested column is unknown
            (the message lists the available ones), a row is ragged, or a selected cell is
            empty, non-numeric, NaN or infinite; messages name the file, the row (numbered as
            lines of the file, header = 1) and the column.
    """
    path = existing_file(path)
    rows = read_numeric_csv(path, parse_columns(columns), delimiter)
    return torch.tensor(rows, dtype=torch.float32)


def load_npy(path: PathLike, key: str | None = None) -> torch.Tensor:
    """Load an array from a .npy file or a .npz archive (told apart by content), pickle-free.

    Args:
        path: The file.
        key: Name of the array in a .npz archive; required when it holds several arrays.

    Returns:
        Tensor of the stored shape, float32.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        TypeError: If ``key`` is not a str or None.
        ValueError: If ``key`` is missing or unknown (the message lists the keys), the array is
            an object array (pickles are refused), its data does not match its header, or it is
            non-numeric, empty, or holds NaN/inf.
    """
    path = existing_file(path)
    array, name = read_array(path, key)
    return as_tensor(array, name=name, ndim=None)


def load_idx(path: PathLike) -> torch.Tensor:
    """Load an IDX file (the MNIST format), plain or gzip-compressed (told apart by content).

    Args:
        path: The file.

    Returns:
        Float32 tensor of the shape in the header, raw values (no scaling).

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: On a truncated header, bad magic, unknown dtype code, zero dimensions, a
            payload shorter or longer than the header announces (checked before allocating it;
            the message gives expected and actual byte counts), or NaN/inf values.
    """
    path = existing_file(path)
    return as_tensor(read_idx(path).array(), name=str(path), ndim=None)


def load(
    path: PathLike, columns: Sequence[str] | str | None = None, key: str | None = None
) -> torch.Tensor:
    """Load a data file, choosing the reader from its name and content.

    ``.csv``/``.txt`` are comma-separated and ``.tsv`` tab-separated text; ``.npy``/``.npz`` are
    numpy files; names ending in ``-ubyte`` or ``.idx`` (optionally plus ``.gz``), and ``.gz``
    files whose decompressed data starts like IDX, are IDX files.

    Args:
        path: The file.
        columns: Columns to load; text files only (see :func:`load_csv`).
        key: Array name inside a .npz archive; numpy files only (see :func:`load_npy`).

    Returns:
        Float32 tensor: (n_rows, n_columns) for text files, the stored shape otherwise.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If the format is not supported (the message lists the supported ones),
            ``columns`` or ``key`` is given for a format that has no use for it, or the file
            itself is invalid (see the format's loader).
    """
    path = existing_file(path)
    suffix = path.suffix.lower()
    if suffix in _TEXT_DELIMITERS:
        _reject_unused(key=key, path=path)
        return load_csv(path, columns, delimiter=_TEXT_DELIMITERS[suffix])
    if suffix in _NUMPY_SUFFIXES:
        _reject_unused(columns=columns, path=path)
        return load_npy(path, key)
    if _is_idx(path):
        _reject_unused(columns=columns, key=key, path=path)
        return load_idx(path)
    raise ValueError(
        f"{path}: unsupported file format: expected one of {', '.join(SUPPORTED_FORMATS)}, "
        f"got {suffix or 'no extension'!r}"
    )


#: Most bytes an array made on request (e.g. ``pyrogen sample -n N``) may take, whatever the
#: machine: 64 GiB; less where half this machine's memory is less.
MAX_ARRAY_BYTES = 64 * 2**30


def check_fits_in_memory(shape: Sequence[int], name: str, itemsize: int = 4) -> None:
    """Refuse (ValueError naming ``name``) an array of ``shape`` and ``itemsize`` bytes a
    value that would take more than :data:`MAX_ARRAY_BYTES` or half this machine's memory.

    Example:
        >>> check_fits_in_memory((10_000_000_000, 784), "-n")
        Traceback (most recent call last):
        ...
        ValueError: -n: expected at most ... rows, got 10000000000 (rows of 784 values: ...
    """
    memory = physical_memory() or 2 * MAX_ARRAY_BYTES
    limit, row = min(MAX_ARRAY_BYTES, memory // 2), max(math.prod(shape[1:]), 1) * itemsize
    if shape[0] * row > limit:
        raise ValueError(
            f"{name}: expected at most {limit // row} rows, got {shape[0]} (rows of "
            f"{row // itemsize} values: about {shape[0] * row / 2**30:.0f} GiB, more than the "
            f"{limit / 2**30:.0f} GiB allowed, half this machine's memory or at most 64 GiB)"
        )


def save(path: PathLike | None, rows: torch.Tensor, columns: Sequence[str] | None = None) -> None:
    """Write ``rows`` (N, ...) where :func:`load` reads them back: a ``.npy`` array as they
    are, else a CSV table of the rows flattened, with a header row (``columns`` where there
    are as many, else x0, x1, ...); ``path`` None: the CSV to standard output. Files are
    written whole or not at all (:func:`pyrogen.io.atomic_write`).

    Example:
        >>> save(None, torch.tensor([[1.0, 2.5]]), ["a", "b"])
        a,b
        1,2.5
    """
    array = np.asarray(rows)
    suffix = None if path is None else Path(path).suffix.lower()
    if suffix not in (None, ".csv", ".npy"):
        raise ValueError(f"path: expected a file ending in .csv or .npy, got {str(path)!r}")
    if suffix == ".npy":
        with atomic_write(path) as handle:
            return np.save(handle, array)
    table = array.reshape(array.shape[0], -1)
    if columns is None or len(columns) != table.shape[1]:
        columns = [f"x{i}" for i in range(table.shape[1])]
    with contextlib.nullcontext(sys.stdout) if path is None else atomic_write(path, "w") as handle:
        header = ",".join(columns)
        np.savetxt(handle, table, delimiter=",", header=header, comments="", fmt="%.8g")


def _is_idx(path: Path) -> bool:
    name = path.name.lower()
    stem = name.removesuffix(".gz")
    if stem.endswith(_IDX_SUFFIXES):
        return True
    if name.endswith(".gz") and is_gzip(path):
        with gzip.open(path, "rb") as stream:
            return looks_like_idx(bytes(read_at_most(stream, 4, name=str(path))))
    return False


def _reject_unused(
    *, path: Path, columns: Sequence[str] | str | None = None, key: str | None = None
) -> None:
    # A silently ignored argument would hide a user's mistake about what the file holds.
    if columns is not None:
        raise ValueError(f"columns: expected None for {path} (not a text table), got {columns!r}")
    if key is not None:
        raise ValueError(f"key: expected None for {path} (not a .npz archive), got {key!r}")
