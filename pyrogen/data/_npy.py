"""Safe reader for .npy and .npz files.

``np.load`` allocates the whole array from the shape in the file header before reading the
data, so a forged header can request terabytes. Here the header is parsed with numpy's own
format helpers and the data is read in bounded chunks, checked against the announced size.
Object arrays are refused outright: they are pickles, and nothing here ever unpickles
(the same policy as ``np.load(..., allow_pickle=False)``).
"""

from __future__ import annotations

import math
import os
import zipfile
from pathlib import Path
from typing import BinaryIO

import numpy as np
from numpy.lib import format as npy_format

from pyrogen.data._files import read_payload

_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
_NPZ_MEMBER_SUFFIX = ".npy"


def read_array(path: Path, key: str | None) -> tuple[np.ndarray, str]:
    """Read one array from a .npy file or from a .npz archive (detected from the content).

    Args:
        path: An existing file.
        key: Name of the array inside a .npz archive; None for a .npy file or an archive
            holding a single array.

    Returns:
        The array (any shape) and the name to use for it in later error messages.

    Raises:
        TypeError: If ``key`` is not a str or None.
        ValueError: If the file is neither .npy nor .npz, ``key`` is missing, unknown or given
            for a .npy file (the message lists the keys), the array is an object array, or its
            data is shorter or longer than its header announces.
    """
    if key is not None and not isinstance(key, str):
        raise TypeError(f"key: expected a str or None, got {type(key).__name__}")
    with path.open("rb") as stream:
        magic = stream.read(4)
    if magic in _ZIP_MAGICS:
        return _read_npz(path, key)
    if key is not None:
        raise ValueError(
            f"key: expected None for the .npy file {path} (it holds a single array), got {key!r}"
        )
    with path.open("rb") as stream:
        available = os.fstat(stream.fileno()).st_size
        return _read_npy(stream, name=str(path), available=available), str(path)


def _read_npz(path: Path, key: str | None) -> tuple[np.ndarray, str]:
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise ValueError(f"{path}: expected a valid .npz (zip) archive, got {exc}") from exc
    with archive:
        keys = [
            member[: -len(_NPZ_MEMBER_SUFFIX)]
            for member in archive.namelist()
            if member.endswith(_NPZ_MEMBER_SUFFIX)
        ]
        if not keys:
            raise ValueError(f"{path}: expected a .npz archive of arrays, got no .npy members")
        listed = ", ".join(repr(k) for k in keys)
        if key is None:
            if len(keys) > 1:
                raise ValueError(
                    f"{path}: holds several arrays ({listed}); expected key= naming one of them, "
                    "got key=None"
                )
            key = keys[0]
        elif key not in keys:
            raise ValueError(f"{path}: unknown key: expected one of {listed}, got {key!r}")
        name = f"{path}[{key!r}]"
        with archive.open(key + _NPZ_MEMBER_SUFFIX) as stream:
            # The sizes in a zip directory are as untrusted as the .npy header: no size hint.
            return _read_npy(stream, name=name, available=None), name


def _read_npy(stream: BinaryIO, *, name: str, available: int | None) -> np.ndarray:
    try:
        version = npy_format.read_magic(stream)
        if version == (1, 0):
            shape, fortran_order, dtype = npy_format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, fortran_order, dtype = npy_format.read_array_header_2_0(stream)
        else:
            raise ValueError(f"unsupported .npy format version {version}; expected 1.0 or 2.0")
    except ValueError as exc:
        raise ValueError(
            f"{name}: expected a .npy or .npz file, got an invalid one ({exc})"
        ) from exc
    if dtype.hasobject:
        raise ValueError(
            f"{name}: expected a numeric array, got dtype {dtype} (object arrays are stored as "
            "pickles, which are refused for safety)"
        )
    payload = read_payload(
        stream,
        math.prod(shape) * dtype.itemsize,
        name=name,
        what=f"shape {shape} of {dtype}",
        available=None if available is None else available - stream.tell(),
    )
    if dtype.itemsize == 0:
        # np.frombuffer rejects zero-width dtypes; there is no data to read anyway.
        return np.empty(shape, dtype=dtype)
    order = "F" if fortran_order else "C"
    return np.frombuffer(payload, dtype=dtype).reshape(shape, order=order)
