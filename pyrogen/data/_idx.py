"""Reader for the IDX format of MNIST (plain or gzip-compressed).

Layout: two zero bytes, a dtype code byte, an ndim byte, ndim big-endian uint32 sizes, then the
values in C order (multi-byte values big-endian). See http://yann.lecun.com/exdb/mnist/.
"""

from __future__ import annotations

import hashlib
import math
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pyrogen.data._files import open_maybe_gzip, read_at_most, read_payload

IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_PREFIX_BYTES = 4
_DIM_BYTES = 4


@dataclass(frozen=True)
class IdxContents:
    """The decoded header and raw payload of an IDX file.

    Attributes:
        header: The header bytes exactly as in the (decompressed) file.
        payload: The data bytes, exactly prod(shape) * dtype.itemsize of them.
        dtype: numpy dtype of the values (big-endian for multi-byte types).
        shape: Sizes of the dimensions.
    """

    header: bytes
    payload: bytearray
    dtype: np.dtype
    shape: tuple[int, ...]

    def array(self) -> np.ndarray:
        """View the payload as an array.

        Returns:
            Array of shape ``self.shape`` and dtype ``self.dtype``, sharing the payload's memory.
        """
        return np.frombuffer(self.payload, dtype=self.dtype).reshape(self.shape)

    def md5(self) -> str:
        """MD5 of the whole decompressed file (header then payload), as published for MNIST.

        Returns:
            Hex digest string.
        """
        digest = hashlib.md5(self.header, usedforsecurity=False)
        digest.update(self.payload)
        return digest.hexdigest()


def looks_like_idx(prefix: bytes) -> bool:
    """Tell whether the first bytes of a (decompressed) file form a plausible IDX prefix.

    Args:
        prefix: At least the first 4 bytes of the file.

    Returns:
        True when the magic is two zero bytes, a known dtype code and ndim >= 1.
    """
    return (
        len(prefix) >= _PREFIX_BYTES
        and prefix[:2] == b"\x00\x00"
        and prefix[2] in IDX_DTYPES
        and prefix[3] >= 1
    )


def read_idx(path: Path) -> IdxContents:
    """Read and validate an IDX file, gzip-compressed or not (detected from its first bytes).

    The payload size announced by the header is checked against the real data before any
    buffer of that size exists: plain files are compared with their size on disk, gzip streams
    are read in bounded chunks and rejected as soon as they run past the announced size.

    Args:
        path: An existing file.

    Returns:
        The header, payload, dtype and shape.

    Raises:
        ValueError: On a truncated header, bad magic, unknown dtype code, zero dimensions,
            a payload shorter or longer than the header announces (expected vs got byte counts),
            or corrupt gzip data.
    """
    with open_maybe_gzip(path) as (stream, size):
        prefix = bytes(read_at_most(stream, _PREFIX_BYTES, name=str(path)))
        dtype, ndim = _parse_prefix(prefix, path)
        header_bytes = _PREFIX_BYTES + _DIM_BYTES * ndim
        dims_bytes = bytes(read_at_most(stream, header_bytes - _PREFIX_BYTES, name=str(path)))
        if len(prefix) + len(dims_bytes) < header_bytes:
            raise _truncated(path, header_bytes, len(prefix) + len(dims_bytes))
        shape = struct.unpack(f">{ndim}I", dims_bytes)
        payload = read_payload(
            stream,
            math.prod(shape) * dtype.itemsize,
            name=str(path),
            what=f"shape {shape} of {dtype.name} after the {header_bytes}-byte IDX header",
            available=None if size is None else size - header_bytes,
        )
    return IdxContents(header=prefix + dims_bytes, payload=payload, dtype=dtype, shape=shape)


def _parse_prefix(prefix: bytes, path: Path) -> tuple[np.dtype, int]:
    if len(prefix) < _PREFIX_BYTES:
        raise _truncated(path, _PREFIX_BYTES, len(prefix))
    if prefix[:2] != b"\x00\x00":
        raise ValueError(
            f"{path}: bad magic, not an IDX file: expected first bytes 00 00, "
            f"got {prefix[:2].hex(' ')}"
        )
    code, ndim = prefix[2], prefix[3]
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        raise ValueError(
            f"{path}: unknown IDX dtype code: expected one of {known}, got 0x{code:02X}"
        )
    if ndim == 0:
        raise ValueError(f"{path}: invalid IDX header: expected ndim >= 1, got 0")
    return IDX_DTYPES[code], ndim


def _truncated(path: Path, expected: int, got: int) -> ValueError:
    return ValueError(
        f"{path}: truncated header: expected at least {expected} bytes of IDX header, got {got}"
    )
