"""The data options of the commands (``--data``, ``--data-dir``, ``--dataset``,
``--binarize``, ``--labels``), checked together and read with :mod:`pyrogen.data`."""

from __future__ import annotations

import argparse
import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pyrogen.cli.options import at_least_two, flag, positive_int
from pyrogen.data import (
    BINARIZE_MODES,
    BINARIZED_MNIST_FILE,
    IMAGE_DATASETS,
    LABEL_KEYS,
    OLD_FAITHFUL_COLUMNS,
    TEST_FRACTION,
    ImageSplit,
    as_rows,
    binarize,
    check_unit_interval,
    default_binarization,
    describe_binarization,
    load,
    load_image_dataset,
    old_faithful,
    read_labelled_array,
    split_train_test,
)
from pyrogen.models import GenerativeModel

#: Arguments of :mod:`pyrogen.data` whose errors are reported as the options that set them.
_OPTION_ARGUMENTS = ("data", "data_dir", "labels", "labelled", "columns", "encoder")

#: Help of ``--data`` for families that split their data into training and test rows.
SPLIT_DATA_HELP = (
    "an NPY/NPZ array (N, *shape) (CSV/TSV also read), split at random (seeded) into "
    f"{1 - TEST_FRACTION:.0%}% training and {TEST_FRACTION:.0%}% test rows; an NPZ archive may "
    "also hold their labels (an array named y or labels, the images x or images); one of "
    "--data and --data-dir is required"
)
#: Help of ``--data`` for families fitted to a whole table.
TABLE_DATA_HELP = (
    "data file (CSV/TSV, NPY/NPZ or IDX) of shape (N, D); default the bundled Old Faithful data"
)


@contextlib.contextmanager
def as_option_errors(arguments: tuple[str, ...] = _OPTION_ARGUMENTS) -> Iterator[None]:
    """Report an error about one of ``arguments`` (of :mod:`pyrogen.data`, or of
    :func:`pyrogen.fit`) as the option that set it (``data_dir: ...`` as ``--data-dir: ...``)."""
    try:
        yield
    except ValueError as error:
        found = re.match(r"([a-z_]+(?:, [a-z_]+)*): ", str(error))
        names = found.group(1).split(", ") if found else []
        if not names or any(name not in arguments for name in names):
            raise
        renamed = ", ".join(flag(name) for name in names) + str(error)[found.end(1) :]
        raise ValueError(renamed) from error


def add_data_dir_option(group: Any, use: str) -> None:
    """``--data-dir``: a folder of MNIST or binarized MNIST."""
    group.add_argument(
        "--data-dir",
        type=Path,
        metavar="DIR",
        help="folder of the MNIST IDX files ({train,t10k}-{images-idx3,labels-idx1}-ubyte, "
        "plain or .gz; get them with pyrogen.data.download_mnist), or with --dataset "
        f"binarized-mnist the folder holding {BINARIZED_MNIST_FILE}; {use}",
    )


def add_binarize_option(group: Any, default: str) -> None:
    """``--binarize``: how image values become 0/1."""
    group.add_argument(
        "--binarize",
        choices=BINARIZE_MODES,
        help="dynamic: training images are resampled as Bernoulli(pixel intensity) at the "
        "start of every epoch and test images are sampled once with the seed; threshold: "
        "values above 0.5 become 1, the others 0; none: values as they are. " + default,
    )


def add_labels_options(group: Any, use: str, *, num_classes: bool = True) -> None:
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
            type=at_least_two,
            metavar="C",
            help="number of classes, labels 0..C-1 (default: the largest label + 1)",
        )


def add_image_options(parser: argparse.ArgumentParser, name: str) -> None:
    """--data-dir, --dataset, --binarize and --limit of a family fitted to images."""
    data = parser.add_argument_group(f"{name} data")
    add_data_dir_option(data, "trains on the train split and scores the test split")
    data.add_argument(
        "--dataset",
        choices=IMAGE_DATASETS,
        help="what --data-dir holds (default mnist); binarized-mnist is the fixed "
        "binarization of Larochelle & Murray (its valid split is not used)",
    )
    add_binarize_option(
        data, "Default dynamic for --dataset mnist with the bernoulli likelihood, else none."
    )
    data.add_argument(
        "--limit",
        type=positive_int,
        metavar="N",
        help="train on the first N training rows only (quick runs); the test set is whole",
    )


def dataset_of(args: argparse.Namespace, default: str | None = None) -> str | None:
    """What ``--data-dir`` holds (``--dataset``, else ``default``, else mnist); None for files."""
    if args.data_dir is None:
        if args.dataset is not None:
            raise ValueError(
                f"--dataset: expected --data-dir with it (a --data file is read as it is), "
                f"got --dataset {args.dataset}"
            )
        return None
    return args.dataset or default or IMAGE_DATASETS[0]


def binarize_mode(requested: str | None, dataset: str | None, likelihood: str) -> str:
    """The ``--binarize`` mode: as requested, else the data set's default."""
    if dataset == "binarized-mnist":
        if requested not in (None, "none"):
            raise ValueError(
                f"--binarize: expected none for --dataset binarized-mnist (it is binary "
                f"already), got {requested!r}"
            )
        return "none"
    return requested or default_binarization(dataset, likelihood)


def check_values(parts: list[torch.Tensor | None], source: str, mode: str, likelihood: str) -> None:
    """Binarization and the Bernoulli likelihoods need values in [0, 1]."""
    if mode != "none" or likelihood != "gaussian":
        need = "binarization" if mode != "none" else f"a {likelihood} likelihood"
        check_unit_interval(parts, source, need)


def load_split(args: argparse.Namespace, dataset: str | None, seed: int | None) -> ImageSplit:
    """The examples of ``--data-dir`` (its train and test splits) or of a ``--data`` file
    (split with ``seed``; None: every row is a test row), with their labels."""
    labels, columns = getattr(args, "labels", None), getattr(args, "columns", None)
    if args.data_dir is not None and args.data is not None:
        raise ValueError(
            f"--data, --data-dir: expected one of them, got both ({args.data}, {args.data_dir})"
        )
    if args.data_dir is None and args.data is None:
        raise ValueError(
            "--data-dir, --data: expected one of them (e.g. --data-dir DIR holding the MNIST "
            "IDX files, or --data FILE.npy), got neither"
        )
    if args.data is None:
        for name, value in (("columns", columns), ("labels", labels)):
            if value is not None:
                raise ValueError(
                    f"{flag(name)}: expected none with --data-dir (images), got {value!r}"
                )
        try:
            return load_image_dataset(args.data_dir, dataset, train=seed is not None)
        except FileNotFoundError as error:
            raise ValueError(
                f"--data-dir: expected the {dataset} files in {args.data_dir}: {error}"
            ) from error
    with as_option_errors():
        x, y, source = read_labelled_array(args.data, labels=labels, columns=columns)
    if seed is None:
        return ImageSplit(None, x, None, y, f"{args.data}, all {x.shape[0]} rows", None, source)
    split = split_train_test(x, y, seed=seed, source=str(args.data))
    return ImageSplit(
        split.train, split.test, split.train_labels, split.test_labels,
        split.description, None, source,
    )  # fmt: skip


def load_table(path: Path | None, columns: str | None) -> tuple[torch.Tensor, str, list | None]:
    """Rows to fit (``--data``, default the bundled Old Faithful), where they came from, and
    their column names."""
    names = None if columns is None else [name.strip() for name in columns.split(",")]
    if path is not None:
        return load(path, columns=names), str(path), names
    if names is None:
        return old_faithful(), "Old Faithful (bundled)", list(OLD_FAITHFUL_COLUMNS)
    unknown = [name for name in names if name not in OLD_FAITHFUL_COLUMNS]
    if unknown:
        raise ValueError(
            f"--columns: expected names from the bundled Old Faithful data "
            f"({', '.join(OLD_FAITHFUL_COLUMNS)}), got unknown {unknown}"
        )
    if len(set(names)) != len(names):
        raise ValueError(f"--columns: expected each column once, got {columns!r}")
    index = [OLD_FAITHFUL_COLUMNS.index(name) for name in names]
    return old_faithful()[:, index], "Old Faithful (bundled)", names


@dataclass(frozen=True)
class Examples:
    """Examples to score or to complete under a fitted model, prepared as in its run."""

    x: torch.Tensor  # (N, *data_shape), binarized as the run was
    labels: torch.Tensor | None  # (N,), where the data have labels
    labels_source: str | None
    description: str  # where they came from
    binarize: str  # the --binarize mode applied
    preprocessing: str  # what it did


def images_for(args: argparse.Namespace, model: GenerativeModel, run: dict[str, Any]) -> Examples:
    """The test split of ``--data-dir``, or every row of ``--data``, prepared like the run's
    test rows (same --binarize mode and seed, so the same test images) for ``model``."""
    seed = args.seed if args.seed is not None else run.get("seed", 0)
    dataset = dataset_of(args, default=run.get("dataset"))
    requested = args.binarize
    if requested is None and dataset != "binarized-mnist":
        requested = run.get("preprocessing", {}).get("binarize")
    likelihood = model.config.get("likelihood", "gaussian")
    mode = binarize_mode(requested, dataset, likelihood)
    images = load_split(args, dataset, seed=None)
    source = str(args.data if args.data is not None else args.data_dir)
    check_values([images.test], source, mode, likelihood)
    x = as_rows(binarize(images.test, mode, seed=seed), model.data_shape, source)
    how = describe_binarization(mode, seed=seed, likelihood=likelihood, x=x)
    return Examples(x, images.test_labels, images.labels_source, images.description, mode, how)
