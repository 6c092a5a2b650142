"""Data loading for pyrogen: validated tensors from arrays, files and named data sets."""

from __future__ import annotations

from pyrogen.data.datasets import (
    BINARIZED_MNIST_SPLITS,
    DATASETS,
    MNIST_SPLITS,
    MNIST_URL,
    OLD_FAITHFUL_COLUMNS,
    binarized_mnist,
    download_mnist,
    load_dataset,
    mnist,
    old_faithful,
)
from pyrogen.data.loaders import SUPPORTED_FORMATS, load, load_csv, load_idx, load_npy
from pyrogen.data.validation import (
    as_examples,
    as_labels,
    as_tensor,
    check_choice,
    check_int,
    float_dtype_of,
)

__all__ = [
    "BINARIZED_MNIST_SPLITS",
    "DATASETS",
    "MNIST_SPLITS",
    "MNIST_URL",
    "OLD_FAITHFUL_COLUMNS",
    "SUPPORTED_FORMATS",
    "as_examples",
    "as_labels",
    "as_tensor",
    "binarized_mnist",
    "check_choice",
    "check_int",
    "download_mnist",
    "float_dtype_of",
    "load",
    "load_csv",
    "load_dataset",
    "load_idx",
    "load_npy",
    "mnist",
    "old_faithful",
]
