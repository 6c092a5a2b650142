"""Class labels on the command line: where they come from (the MNIST label files, a
``--labels`` file, or an array of the ``--data`` NPZ archive), how they are checked against
the images and the classes, and how ``pyrogen fit ssvae --labelled N`` keeps a balanced few.
"""

from __future__ import annotations

import argparse
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from pyrogen.cli.common import _column_names
from pyrogen.data.loaders import load as load_data

#: Arrays of a ``--data`` NPZ archive read as its labels when ``--labels`` is not given.
LABEL_KEYS = ("y", "labels")
#: Arrays of a ``--data`` NPZ archive read as its images when it holds several arrays.
IMAGE_KEYS = ("x", "images")


def _add_labels_options(group: Any, use: str, *, num_classes: bool = True) -> None:
    """``--labels FILE|KEY`` (and ``--num-classes C``) for the examples of ``--data``."""
    group.add_argument(
        "--labels",
        metavar="FILE|KEY",
        help="labels of the --data rows, one integer class per row: a file (NPY, NPZ with "
        "one array, or CSV/TSV with a header row and one column) or the name of an array of "
        f"the --data NPZ archive (arrays named {' or '.join(LABEL_KEYS)} are read without "
        f"this option; --data-dir MNIST has its own labels); {use}",
    )
    if num_classes:
        group.add_argument(
            "--num-classes",
            type=_positive_int_at_least_2,
            metavar="C",
            help="number of classes, labels 0..C-1 (default: the largest label + 1)",
        )


def _positive_int_at_least_2(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 2:
        raise argparse.ArgumentTypeError(f"expected at least 2 classes, got {text!r}")
    return value


def _npz_keys(path: Path) -> list[str] | None:
    """The array names of an NPZ archive, or None when ``path`` is not one."""
    if not path.is_file() or not zipfile.is_zipfile(path):
        return None
    with zipfile.ZipFile(path) as archive:
        return [name[: -len(".npy")] for name in archive.namelist() if name.endswith(".npy")]


def _read_images_and_labels(
    data: Path, columns: str | None, labels: str | None
) -> tuple[torch.Tensor, torch.Tensor | None, str | None]:
    """The examples of a ``--data`` file and their labels, if any.

    Args:
        data: the ``--data`` file.
        columns: ``--columns`` (CSV/TSV files).
        labels: ``--labels``: a file, or the name of an array of ``data`` (an NPZ archive);
            None reads an array named as in :data:`LABEL_KEYS`, if there is one.

    Returns:
        ``(x, y, source)``: x (N, ...); y (N,) int64 or None; where y came from, e.g.
        ``"images.npz['y']"`` (None without labels).
    """
    keys = _npz_keys(data)
    label_key = None
    if keys is not None and len(keys) > 1:
        if labels is not None and labels in keys:
            label_key = labels
        elif labels is None:
            label_key = next((key for key in LABEL_KEYS if key in keys), None)
        rest = [key for key in keys if key != label_key]
        image_key = rest[0] if len(rest) == 1 else next((k for k in IMAGE_KEYS if k in rest), None)
        if image_key is None:
            raise ValueError(
                f"--data: expected an NPZ archive holding the images (named "
                f"{' or '.join(map(repr, IMAGE_KEYS))}) and at most their labels, got arrays "
                f"{', '.join(map(repr, keys))} in {data}"
            )
        x = load_data(data, key=image_key)
    else:
        x = load_data(data, columns=_column_names(columns))
    if label_key is not None:
        source = f"{data}[{label_key!r}]"
        values = load_data(data, key=label_key)
    elif labels is not None:
        file = Path(labels)
        if not file.is_file():
            where = f" or an array of {data} ({', '.join(map(repr, keys))})" if keys else ""
            raise ValueError(f"--labels: expected a labels file{where}, got {labels!r}")
        source, values = str(file), load_data(file)
    else:
        return x, None, None
    return x, _label_vector(values, x.shape[0], source, data), source


def _label_vector(values: torch.Tensor, rows: int, source: str, data: Path | str) -> torch.Tensor:
    """``values`` as int64 labels (rows,): one integer per example of ``data``."""
    if values.dim() == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.dim() != 1:
        raise ValueError(
            f"{source}: expected one label per row, shape ({rows},), got shape "
            f"{tuple(values.shape)}"
        )
    if values.shape[0] != rows:
        raise ValueError(
            f"{source}: expected {rows} labels, one per row of {data}, got {values.shape[0]}"
        )
    if not torch.equal(values, values.round()):
        row = int((values != values.round()).nonzero()[0, 0])
        raise ValueError(
            f"{source}: expected integer class labels, got {values[row].item():g} at row {row}"
        )
    return values.long()


def _num_classes(requested: int | None, labels: Sequence[torch.Tensor | None], source: str) -> int:
    """C: ``--num-classes``, else the largest label + 1; checked against the labels."""
    present = [y for y in labels if y is not None]
    known = torch.cat(present)[torch.cat(present) >= 0] if present else torch.zeros(0)
    if known.numel() == 0:
        raise ValueError(f"{source}: expected class labels 0, 1, ..., got no labelled rows")
    largest = int(known.max())
    if requested is None:
        if largest < 1:
            raise ValueError(
                f"{source}: expected labels of at least 2 classes, got only class {largest} "
                "(give --num-classes C to say how many there are)"
            )
        return largest + 1
    if largest >= requested:
        raise ValueError(
            f"{source}: expected labels in 0..{requested - 1} (--num-classes {requested}), got "
            f"{largest} in {int((known == largest).sum())} row(s)"
        )
    return requested


def _check_classes(
    labels: torch.Tensor, num_classes: int, source: str, *, unlabelled: bool = False
) -> torch.Tensor:
    """``labels`` checked to lie in 0..C-1 (or be -1, "unlabelled", where allowed)."""
    low = -1 if unlabelled else 0
    bad = (labels < low) | (labels >= num_classes)
    if bad.any():
        value = int(labels[bad][0])
        allowed = f"0..{num_classes - 1}" + (" or -1 (unlabelled)" if unlabelled else "")
        raise ValueError(
            f"{source}: expected labels in {allowed}, got {value} in "
            f"{int((labels == value).sum())} row(s)"
        )
    return labels


def _keep_balanced(
    labels: torch.Tensor, count: int, num_classes: int, seed: int
) -> tuple[torch.Tensor, list[int]]:
    """Keep ``count`` labels, as evenly spread over the classes as the rows allow.

    Each class gets ``count // C`` labelled rows, ``count % C`` classes chosen at random one
    more; a class with too few rows gives all it has and the rest is shared among the others.
    The rows of each class are taken in a seeded random order.

    Returns:
        the labels with every other row set to -1 (unlabelled), and the rows kept per class.
    """
    known = int((labels >= 0).sum())
    if count > known:
        raise ValueError(
            f"--labelled: expected at most {known} (the training rows with a label), got {count}"
        )
    generator = torch.Generator().manual_seed(seed)
    rows = [(labels == k).nonzero()[:, 0] for k in range(num_classes)]
    rows = [r[torch.randperm(len(r), generator=generator)] for r in rows]
    taken = [0] * num_classes
    remaining = count
    while remaining:
        open_ = [k for k in range(num_classes) if taken[k] < len(rows[k])]
        share, extra = divmod(remaining, len(open_))
        lucky = set(torch.randperm(len(open_), generator=generator)[:extra].tolist())
        for i, k in enumerate(open_):
            add = min(share + (i in lucky), len(rows[k]) - taken[k])
            taken[k] += add
            remaining -= add
    kept = torch.full_like(labels, -1)
    for k in range(num_classes):
        chosen = rows[k][: taken[k]]
        kept[chosen] = k
    return kept, taken


def _describe_counts(counts: Sequence[int]) -> str:
    """ "10 per class", or "9 to 11 per class" when they differ."""
    low, high = min(counts), max(counts)
    return f"{low} per class" if low == high else f"{low} to {high} per class"
