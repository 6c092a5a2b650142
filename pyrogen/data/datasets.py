"""Named data sets: the bundled Old Faithful table, MNIST and binarized MNIST from a folder."""

from __future__ import annotations

import functools
import importlib.resources
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from pyrogen.checks import check_choice
from pyrogen.data._files import PathLike, download_atomically
from pyrogen.data._idx import IdxContents, read_idx
from pyrogen.data.loaders import load, load_csv, load_npy

OLD_FAITHFUL_COLUMNS = ("eruptions", "waiting")
MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
MNIST_SPLITS = ("train", "test")
BINARIZED_MNIST_SPLITS = ("train", "valid", "test")
BINARIZED_MNIST_FILE = "binarized_mnist.npz"
_MNIST_PIXELS = 28 * 28
_URL_SCHEMES = ("http", "https", "file")
# gzip adds a few bytes per 64 KiB block at worst, so no honest .gz is this much larger.
_GZIP_SLACK_BYTES = 1 << 20


def old_faithful() -> torch.Tensor:
    """The Old Faithful geyser data (R ``datasets::faithful``), bundled with pyrogen.

    Returns:
        Tensor of shape (272, 2), float32: columns ``OLD_FAITHFUL_COLUMNS`` = eruption duration
        and waiting time to the next eruption, both in minutes.
    """
    resource = importlib.resources.files(__package__) / "files" / "faithful.csv"
    with importlib.resources.as_file(resource) as path:
        return load_csv(path, columns=OLD_FAITHFUL_COLUMNS)


DATASETS: dict[str, Callable[[], torch.Tensor]] = {"old_faithful": old_faithful}


def load_table(
    path: PathLike | None = None, columns: str | None = None, key: str | None = None
) -> tuple[torch.Tensor, str, list[str] | None]:
    """Rows of a data file, or of the bundled Old Faithful data when ``path`` is None.

    Args:
        path: a file :func:`~pyrogen.data.load` reads, or None.
        columns: comma-separated names of the columns to use (of a CSV/TSV file, or of
            ``OLD_FAITHFUL_COLUMNS``); None: all of them.
        key: the array of an NPZ archive ``path`` to use (see :func:`~pyrogen.data.load`).

    Returns:
        ``(x, source, names)``: the rows (N, ...), where they came from, the column names.

    Example:
        >>> x, source, names = load_table(columns="waiting")
        >>> tuple(x.shape), source, names
        ((272, 1), 'Old Faithful (bundled)', ['waiting'])
    """
    names = None if columns is None else [name.strip() for name in columns.split(",")]
    if path is not None:
        return load(path, columns=names, key=key), str(path), names
    if names is None:
        return old_faithful(), "Old Faithful (bundled)", list(OLD_FAITHFUL_COLUMNS)
    unknown = [name for name in names if name not in OLD_FAITHFUL_COLUMNS]
    if unknown:
        raise ValueError(
            f"columns: expected names from the bundled Old Faithful data "
            f"({', '.join(OLD_FAITHFUL_COLUMNS)}), got unknown {unknown}"
        )
    if len(set(names)) != len(names):
        raise ValueError(f"columns: expected each column once, got {columns!r}")
    index = [OLD_FAITHFUL_COLUMNS.index(name) for name in names]
    return old_faithful()[:, index], "Old Faithful (bundled)", names


def load_dataset(name: str) -> torch.Tensor:
    """Load a data set bundled with pyrogen by name.

    Args:
        name: A key of ``DATASETS``, e.g. "old_faithful".

    Returns:
        Tensor of shape (n_samples, n_features), float32.

    Raises:
        ValueError: If ``name`` is not a bundled data set (the message lists them).
    """
    check_choice("name", name, tuple(DATASETS))
    return DATASETS[name]()


@dataclass(frozen=True)
class _MnistFile:
    stem: str
    md5: str  # of the decompressed file, as published with the original LeCun files
    nbytes: int  # decompressed size, which also bounds an honest download of the .gz


_MNIST_FILES = {
    ("train", "images"): _MnistFile(
        "train-images-idx3-ubyte", "6bbc9ace898e44ae57da46a324031adb", 47_040_016
    ),
    ("train", "labels"): _MnistFile(
        "train-labels-idx1-ubyte", "a25bea736e30d166cdddb491f175f624", 60_008
    ),
    ("test", "images"): _MnistFile(
        "t10k-images-idx3-ubyte", "2646ac647ad5339dbf082846283269ea", 7_840_016
    ),
    ("test", "labels"): _MnistFile(
        "t10k-labels-idx1-ubyte", "27ae3e4e09519cfbb04c329615203637", 10_008
    ),
}


def mnist(root: PathLike, split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """Load MNIST from the original IDX files in ``root``, verifying their published MD5s.

    Each file may be plain (``train-images-idx3-ubyte``) or gzip-compressed (``...-ubyte.gz``);
    the checksum is of the decompressed bytes, so any faithful recompression is accepted.

    Args:
        root: Folder holding ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``, e.g. as
            written by :func:`download_mnist`.
        split: "train" (60000 images) or "test" (10000 images, the ``t10k`` files).

    Returns:
        ``(images, labels)``: images a float32 tensor of shape (n_images, 28, 28) scaled to
        [0, 1], labels an int64 tensor of shape (n_images,) with digits 0-9.

    Raises:
        FileNotFoundError: If ``root`` or one of the split's files is missing.
        ValueError: If ``split`` is unknown, or a file is not valid IDX or fails its MD5 check
            (the message names the file).
    """
    check_choice("split", split, MNIST_SPLITS)
    root = _existing_folder(root)
    images = _read_verified(root, _MNIST_FILES[split, "images"])
    labels = _read_verified(root, _MNIST_FILES[split, "labels"])
    pixels = torch.from_numpy(images.array()).to(torch.float32).div_(255.0)
    return pixels, torch.from_numpy(labels.array()).to(torch.int64)


def download_mnist(root: PathLike, base_url: str = MNIST_URL) -> Path:
    """Download the four MNIST .gz files into ``root`` and verify them.

    Files already in ``root`` (plain or .gz) that pass the checksum are kept and not fetched
    again. Each download goes to a temporary file in ``root`` that is verified and then renamed
    into place, so an interrupted or corrupt download leaves nothing behind; nothing the user
    had is deleted or overwritten.

    Args:
        root: Destination folder, created if needed.
        base_url: Folder URL holding the ``.gz`` files: ``http(s)://`` or ``file://`` (a local
            mirror, e.g. for offline use).

    Returns:
        ``root`` as a Path, ready for :func:`mnist`.

    Raises:
        ValueError: If ``base_url`` is not an http(s):// or file:// URL, a file already in
            ``root`` fails its checksum (it is left untouched; remove it to download again), or
            a download is corrupt or oversized.
        OSError: If a download fails.
    """
    if not isinstance(base_url, str) or urllib.parse.urlsplit(base_url).scheme not in _URL_SCHEMES:
        raise ValueError(
            f"base_url: expected an http://, https:// or file:// URL, got {base_url!r}"
        )
    base_url = base_url if base_url.endswith("/") else base_url + "/"
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for spec in _MNIST_FILES.values():
        if _present_and_verified(root, spec):
            continue
        target = root / f"{spec.stem}.gz"
        url = base_url + target.name
        download_atomically(
            url,
            target,
            max_bytes=spec.nbytes + _GZIP_SLACK_BYTES,
            verify=functools.partial(_verify_download, spec=spec, url=url),
        )
    return root


def binarized_mnist(root: PathLike, split: str = "train") -> torch.Tensor:
    """Load the fixed binarization of MNIST by Larochelle & Murray (2011).

    Args:
        root: Folder holding ``binarized_mnist.npz`` with arrays ``train`` (50000 images),
            ``valid`` (10000) and ``test`` (10000).
        split: "train", "valid" or "test".

    Returns:
        Tensor of shape (n_images, 784), float32, values 0 or 1.

    Raises:
        FileNotFoundError: If the .npz file is missing.
        ValueError: If ``split`` is unknown, or the array is invalid or not of shape
            (n_images, 784).
    """
    check_choice("split", split, BINARIZED_MNIST_SPLITS)
    path = Path(root) / BINARIZED_MNIST_FILE
    images = load_npy(path, key=split)
    if images.ndim != 2 or images.shape[1] != _MNIST_PIXELS:
        raise ValueError(
            f"{path}[{split!r}]: expected shape (n_images, {_MNIST_PIXELS}), "
            f"got {tuple(images.shape)}"
        )
    return images


def _existing_folder(root: PathLike) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: expected a folder of MNIST files, got no such folder")
    return root


def _candidates(root: Path, spec: _MnistFile) -> tuple[Path, Path]:
    # The plain file first: it is faster to read than its .gz twin.
    return root / spec.stem, root / f"{spec.stem}.gz"


def _locate(root: Path, spec: _MnistFile) -> Path:
    for path in _candidates(root, spec):
        if path.is_file():
            return path
    tried = " or ".join(str(path) for path in _candidates(root, spec))
    raise FileNotFoundError(
        f"{tried}: no such file; fetch MNIST with pyrogen.data.download_mnist({str(root)!r})"
    )


def _present_and_verified(root: Path, spec: _MnistFile) -> bool:
    for path in _candidates(root, spec):
        if path.is_file():
            try:
                _verified_contents(path, spec)
            except ValueError as exc:
                raise ValueError(
                    f"{exc}; the existing file was left untouched: move or delete it, then call "
                    "download_mnist again"
                ) from exc
            return True
    return False


def _read_verified(root: Path, spec: _MnistFile) -> IdxContents:
    return _verified_contents(_locate(root, spec), spec)


def _verify_download(path: Path, *, spec: _MnistFile, url: str) -> None:
    try:
        _verified_contents(path, spec)
    except ValueError as exc:
        raise ValueError(f"{url}: downloaded file rejected: {exc}") from exc


def _verified_contents(path: Path, spec: _MnistFile) -> IdxContents:
    contents = read_idx(path)
    digest = contents.md5()
    if digest != spec.md5:
        raise ValueError(
            f"{path}: MD5 checksum mismatch for MNIST {spec.stem}: expected "
            f"{spec.md5}, got {digest} (corrupt or not the original file)"
        )
    return contents
