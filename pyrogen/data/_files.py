"""Low-level file helpers shared by the loaders: gzip sniffing, bounded reads, atomic downloads.

Every size read from a file header is untrusted, so nothing here pre-allocates from one:
buffers grow only with bytes that are actually present in the stream.
"""

from __future__ import annotations

import gzip
import os
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from pyrogen.io import atomic_write

PathLike = str | os.PathLike[str]

GZIP_MAGIC = b"\x1f\x8b"
CHUNK_BYTES = 1 << 20

# Errors a corrupt compressed stream can raise mid-read (BadZipFile is not an OSError).
_CORRUPT_STREAM_ERRORS = (OSError, EOFError, zlib.error, zipfile.BadZipFile)


def existing_file(path: PathLike) -> Path:
    """Return ``path`` as a :class:`~pathlib.Path` after checking that it is a regular file.

    Args:
        path: Path of the file to read.

    Returns:
        The same path as a ``Path``.

    Raises:
        TypeError: If ``path`` is not a str or ``os.PathLike``.
        FileNotFoundError: If nothing exists at ``path``.
        ValueError: If ``path`` exists but is a directory or another non-regular file.
    """
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"path: expected a str or os.PathLike, got {type(path).__name__}")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if not path.is_file():
        raise ValueError(f"{path}: expected a regular file, got a directory or special file")
    return path


def is_gzip(path: Path) -> bool:
    """Tell whether ``path`` starts with the gzip magic bytes ``1f 8b`` (the name is ignored).

    Args:
        path: An existing file.

    Returns:
        True for gzip-compressed content.
    """
    with path.open("rb") as stream:
        return stream.read(len(GZIP_MAGIC)) == GZIP_MAGIC


@contextmanager
def open_maybe_gzip(path: Path) -> Iterator[tuple[BinaryIO, int | None]]:
    """Open ``path`` for binary reading, decompressing transparently when it is gzip.

    Args:
        path: An existing file.

    Returns:
        A context manager yielding ``(stream, size)``: ``size`` is the exact number of bytes the
        stream will yield for a plain file, or None for gzip (only known after decompressing).
    """
    if is_gzip(path):
        with gzip.open(path, "rb") as stream:
            yield stream, None
    else:
        with path.open("rb") as stream:
            yield stream, os.fstat(stream.fileno()).st_size


def read_at_most(stream: BinaryIO, limit: int, *, name: str) -> bytearray:
    """Read up to ``limit`` bytes in bounded chunks, stopping early at end of stream.

    Args:
        stream: A binary stream (plain, gzip or zip member).
        limit: Largest number of bytes to read; may be huge and untrusted.
        name: What to call the stream in error messages (usually its path).

    Returns:
        The bytes read, at most ``limit`` of them.

    Raises:
        ValueError: If the compressed data is corrupt.
    """
    buffer = bytearray()
    while len(buffer) < limit:
        try:
            chunk = stream.read(min(CHUNK_BYTES, limit - len(buffer)))
        except _CORRUPT_STREAM_ERRORS as exc:
            raise ValueError(f"{name}: corrupt or truncated compressed data ({exc})") from exc
        if not chunk:
            break
        buffer += chunk
    return buffer


def read_payload(
    stream: BinaryIO, expected: int, *, name: str, what: str, available: int | None
) -> bytearray:
    """Read exactly ``expected`` bytes and check that the stream ends right after them.

    Args:
        stream: A binary stream positioned at the start of the payload.
        expected: Payload size announced by an (untrusted) header.
        name: What to call the stream in error messages (usually its path).
        what: Description of the expected payload for messages, e.g. "shape (2, 3) of uint8".
        available: Exact number of bytes left in the stream when known (plain files), so a
            mismatch is reported before reading anything; None for compressed streams.

    Returns:
        The ``expected`` payload bytes.

    Raises:
        ValueError: If the stream holds fewer or more bytes than ``expected``; the message gives
            both counts.
    """
    if available is not None and available != expected:
        raise _size_mismatch(name, what, expected, str(available))
    payload = read_at_most(stream, expected, name=name)
    if len(payload) < expected:
        raise _size_mismatch(name, what, expected, str(len(payload)))
    trailing = read_at_most(stream, CHUNK_BYTES, name=name)
    if trailing:
        # Count at most one chunk of the excess: a huge (or endless) stream must not be drained.
        more = "more than " if len(trailing) == CHUNK_BYTES else ""
        raise _size_mismatch(name, what, expected, f"{more}{expected + len(trailing)}")
    return payload


def _size_mismatch(name: str, what: str, expected: int, got: str) -> ValueError:
    return ValueError(
        f"{name}: payload size mismatch: expected {expected} bytes of data for {what}, got {got}"
    )


def download_atomically(
    url: str, target: Path, *, max_bytes: int, verify: Callable[[Path], None]
) -> None:
    """Download ``url`` to ``target`` through a temporary file in the same folder.

    The temporary file is verified and then renamed over ``target`` with :func:`os.replace`, so
    ``target`` is either absent or complete, never partial.

    Args:
        url: Address to fetch (``http://``, ``https://`` or ``file://``).
        target: Final path of the file; its folder must exist.
        max_bytes: Largest download accepted, so a misbehaving server cannot fill the disk.
        verify: Called with the temporary file's path; raises to reject the download.

    Raises:
        OSError: If the download fails (network error, missing remote file).
        ValueError: If the download is larger than ``max_bytes`` or ``verify`` rejects it.
    """
    with atomic_write(target) as out:
        _copy_url(url, out, max_bytes=max_bytes)
        out.flush()
        verify(Path(out.name))


def _copy_url(url: str, out: BinaryIO, *, max_bytes: int) -> None:
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            copied = 0
            while chunk := response.read(CHUNK_BYTES):
                copied += len(chunk)
                if copied > max_bytes:
                    raise ValueError(
                        f"{url}: expected a download of at most {max_bytes} bytes, "
                        f"got more than {max_bytes}"
                    )
                out.write(chunk)
    except urllib.error.URLError as exc:
        raise OSError(f"{url}: download failed ({exc.reason})") from exc
