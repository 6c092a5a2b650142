"""Atomic file writes and safe checkpoint files.

Everything pyrogen writes goes through :func:`atomic_write` so that an interrupted run never
leaves a half-written file behind, and every checkpoint is read back with
``torch.load(..., weights_only=True)`` so that loading a file never runs code from it.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

PathLike = str | os.PathLike


@contextlib.contextmanager
def atomic_write(path: PathLike, mode: str = "wb") -> Iterator[Any]:
    """Open a temporary file beside ``path`` and move it into place only on success.

    Args:
        path: final destination; its folder must exist.
        mode: ``"wb"`` or ``"w"``.

    Yields:
        the open temporary file (its ``name`` is the temporary path, e.g. for a check
        before the file is moved into place; raising inside the block discards it).
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise ValueError(f"cannot write {str(path)!r}: folder {str(path.parent)!r} does not exist")
    remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temporary_prefix(path), suffix=".tmp")
    os.close(fd)
    try:
        with open(tmp, mode) as handle:  # handle.name is the temporary path
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp creates files readable by the owner only; give the usual permissions
        os.chmod(tmp, 0o666 & ~_current_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


#: This machine's name as it appears in temporary names (letters, digits and dashes).
_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40] or "host"


def temporary_prefix(path: PathLike, kind: str = "") -> str:
    """The start of the name of a temporary sibling of ``path`` (a file being written, a run
    being staged): hidden, tagged with ``kind``, this machine and this process, so that
    :func:`remove_stale_temporaries` can tell one whose writer died (say by ``kill -9``)."""
    tag = f"{kind}." if kind else ""
    return f".{Path(path).name}.{tag}{_HOST}.{os.getpid()}."


def remove_stale_temporaries(path: PathLike) -> list[Path]:
    """Remove the temporary siblings of ``path`` (files or folders, see
    :func:`temporary_prefix`) left by processes of this machine that no longer run.

    Those of a running process, of another machine, or of unknown origin are kept: only a
    writer that is known to be gone cannot finish its file. POSIX only (elsewhere nothing
    is removed).

    Returns:
        the paths removed.
    """
    path, removed = Path(path), []
    if os.name != "posix" or not path.parent.is_dir():
        return removed
    start = f".{path.name}."
    for candidate in path.parent.glob(f"{glob.escape(start)}*.tmp"):
        parts = candidate.name[len(start) : -len(".tmp")].split(".")
        if len(parts) < 3 or parts[-3] != _HOST or not parts[-2].isdigit():
            continue
        if _is_running(int(parts[-2])):
            continue
        with contextlib.suppress(OSError):  # removed meanwhile, or not ours to remove
            shutil.rmtree(candidate) if candidate.is_dir() else candidate.unlink()
            removed.append(candidate)
    return removed


def _is_running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except OSError:  # it exists, as another user's process
        return True
    return True


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_checkpoint(path: PathLike, payload: dict[str, Any]) -> None:
    """Write ``payload`` (tensors, numbers, strings, lists and dicts only) atomically."""
    with atomic_write(path) as handle:
        torch.save(payload, handle)


def load_checkpoint(path: PathLike, *, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` without unpickling objects.

    Args:
        path: checkpoint file.
        required: keys the payload must have.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a readable checkpoint, or lacks a required key.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for corrupt or foreign files
        raise ValueError(f"checkpoint {str(path)!r} could not be read safely: {error}") from error
    if not isinstance(payload, dict):
        raise ValueError(f"checkpoint {str(path)!r}: expected a dict, got {type(payload).__name__}")
    missing = [key for key in required if key not in payload]
    if missing:
        raise ValueError(f"checkpoint {str(path)!r} is not a pyrogen file: missing {missing}")
    return payload
