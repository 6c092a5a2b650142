"""What the commands read: the data options (``--data``, ``--data-dir``, ``--dataset``,
``--binarize``, ``--labels``), checked together and read with :mod:`pyrogen.data`, and the
fitted model of a run folder."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pyrogen.cli.options import add_all, at_least_two, flag, positive_int
from pyrogen.data import (
    BINARIZE_MODES,
    BINARIZED_MNIST_FILE,
    IMAGE_DATASETS,
    LABEL_KEYS,
    TEST_FRACTION,
    ImageSplit,
    as_rows,
    binarization_mode,
    binarize,
    check_unit_interval,
    describe_binarization,
    load_images,
)
from pyrogen.diagnostics.report import MODEL_FILE, SUMMARY_FILE
from pyrogen.infer.distributed import cluster
from pyrogen.models import GenerativeModel, load

#: Arguments of :mod:`pyrogen.data` whose errors are reported as the options that set them.
_OPTION_ARGUMENTS = (
    "data", "data_dir", "dataset", "binarize", "labels", "labelled", "columns", "encoder"
)  # fmt: skip

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
    """Report an error about ``arguments`` (of :mod:`pyrogen.data` or :func:`pyrogen.fit`) in
    the options' words: ``data_dir: ...`` as ``--data-dir: ...``, ``dataset='mnist'`` as
    ``--dataset mnist``."""
    try:
        yield
    except ValueError as error:
        found = re.match(r"([a-z_]+(?:, [a-z_]+)*): ", str(error))
        names = found.group(1).split(", ") if found else []
        if not names or any(name not in arguments for name in names):
            raise
        rest = re.sub(
            r"\b(\w+)='([^']*)'", lambda m: f"{flag(m[1])} {m[2]}", str(error)[found.end(1) :]
        )
        rest = re.sub(r"\bdata_dir\b", "--data-dir", rest)
        raise ValueError(", ".join(map(flag, names)) + rest) from error


def add_image_options(group: Any, use: str, binarize_default: str, *, limit=False) -> None:
    """--data-dir, --dataset and --binarize (and --limit) of the commands that read images."""
    add_all(
        group,
        ("--data-dir", "folder of the MNIST IDX files ({train,t10k}-{images-idx3,labels-idx1}"
         "-ubyte, plain or .gz; get them with pyrogen.data.download_mnist), or with --dataset "
         f"binarized-mnist the folder holding {BINARIZED_MNIST_FILE}; {use}",
         {"type": Path, "metavar": "DIR"}),
        ("--dataset", "what --data-dir holds (default: the run's, else mnist); binarized-mnist "
         "is the fixed binarization of Larochelle & Murray", {"choices": IMAGE_DATASETS}),
        ("--binarize", "dynamic: training images are resampled as Bernoulli(pixel intensity) "
         "every epoch, test images sampled once with the seed; threshold: values above 0.5 "
         f"become 1, the others 0; none: values as they are. {binarize_default}",
         {"choices": BINARIZE_MODES}),
        *[("--limit", "train on the first N training rows only (quick runs); the test set is "
           "whole", {"type": positive_int, "metavar": "N"})][: int(limit)],
    )  # fmt: skip


def add_labels_options(group: Any, use: str, *, num_classes: bool = True) -> None:
    """``--labels FILE|KEY`` (and ``--num-classes C``) for the examples of ``--data``."""
    add_all(
        group,
        ("--labels", "labels of the --data rows, one integer class per row: a file (NPY, NPZ "
         "of one array, or CSV/TSV with a header row and one column) or the name of an array "
         f"of the --data NPZ archive (arrays named {' or '.join(LABEL_KEYS)} are read without "
         f"this option; --data-dir MNIST has its own labels); {use}", {"metavar": "FILE|KEY"}),
        *[("--num-classes", "number of classes, labels 0..C-1 (default: the largest label + 1)",
           {"type": at_least_two, "metavar": "C"})][: int(num_classes)],
    )  # fmt: skip


def load_split(args: argparse.Namespace, dataset: str | None, seed: int | None) -> ImageSplit:
    """:func:`pyrogen.data.load_images` of the options (``seed`` None: test rows only)."""
    with as_option_errors():
        return load_images(
            args.data, args.data_dir, dataset=dataset, split_seed=seed,
            labels=getattr(args, "labels", None), columns=getattr(args, "columns", None),
        )  # fmt: skip


def binarize_mode(args: argparse.Namespace, dataset: str | None, likelihood: str) -> str:
    """The ``--binarize`` mode (:func:`pyrogen.data.binarization_mode`)."""
    with as_option_errors():
        return binarization_mode(args.binarize, dataset, likelihood)


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
    test rows (its data set, --binarize mode and seed by default: the same test images)."""
    seed = args.seed if args.seed is not None else run.get("seed", 0)
    default = run.get("dataset") or IMAGE_DATASETS[0]
    dataset = args.dataset or (default if args.data_dir is not None else None)
    requested = args.binarize
    if requested is None and dataset != "binarized-mnist":
        requested = run.get("preprocessing", {}).get("binarize")
    likelihood = model.config.get("likelihood", "gaussian")
    args = argparse.Namespace(**{**vars(args), "binarize": requested})
    mode = binarize_mode(args, dataset, likelihood)
    images = load_split(args, dataset, seed=None)
    source = str(args.data if args.data is not None else args.data_dir)
    check_unit_interval([images.test], source, mode, likelihood)
    x = as_rows(binarize(images.test, mode, seed=seed), model.data_shape, source)
    how = describe_binarization(mode, seed=seed, likelihood=likelihood, x=x)
    return Examples(x, images.test_labels, images.labels_source, images.description, mode, how)


def load_run(path: Path) -> tuple[GenerativeModel, dict[str, Any]]:
    """A model file, or a run folder's model.pt; with the run's summary (empty for a file)."""
    if not path.is_dir():
        return load(path), {}
    if not (path / MODEL_FILE).is_file():
        raise FileNotFoundError(f"{path}: expected a run folder holding {MODEL_FILE}, found none")
    summary = path / SUMMARY_FILE
    return load(path / MODEL_FILE), json.loads(summary.read_text()) if summary.is_file() else {}


def is_main_process(args: argparse.Namespace) -> bool:
    """Whether this process writes or prints the result of a sharded command: the first
    process of a group, on the first machine."""
    return cluster().is_main and (args.num_nodes == 1 or os.environ.get("NODE_RANK", "0") == "0")


def check_device(name: str) -> torch.device:
    """``--device``, where there is one."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device: expected an available device, got {name!r} (no CUDA)")
    return torch.device(name)
