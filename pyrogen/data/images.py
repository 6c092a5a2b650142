"""Image data for training and scoring: MNIST and binarized MNIST from a folder, arrays of an
NPY/NPZ file with their class labels, seeded train/test splits, binarization (once, or afresh
every epoch as an ``epoch_transform`` of :func:`pyrogen.fit`), label checks and the balanced
labelled subset of semi-supervised training.

Errors are ``ValueError``s whose message starts with the argument (or file) at fault, as
everywhere in :mod:`pyrogen.data`.
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from pyrogen.checks import check_choice
from pyrogen.data._files import PathLike
from pyrogen.data.datasets import BINARIZED_MNIST_FILE, binarized_mnist, mnist
from pyrogen.data.loaders import load

#: Image data sets :func:`load_image_dataset` reads from a folder.
IMAGE_DATASETS = ("mnist", "binarized-mnist")
#: Modes of :func:`binarize`: a Bernoulli sample, a threshold, or the values as they are.
BINARIZE_MODES = ("dynamic", "threshold", "none")
#: Threshold of ``binarize(x, "threshold")``.
BINARIZE_THRESHOLD = 0.5
#: Share of the rows :func:`split_train_test` holds out for testing.
TEST_FRACTION = 0.1
#: Shape of one MNIST image (binarized MNIST stores them flat).
MNIST_IMAGE = (28, 28)
#: Arrays of an NPZ archive read as its labels by :func:`read_labelled_array`.
LABEL_KEYS = ("y", "labels")
#: Arrays of an NPZ archive read as its images when it holds several arrays.
IMAGE_KEYS = ("x", "images")

_BINARIZATIONS = {
    "dynamic": "training images resampled as Bernoulli(pixel intensity) at the start of "
    "every epoch (the training run's generator, seed {seed}); test images sampled once the "
    "same way (generator seed {seed}), so every evaluation with this seed sees the same test set",
    "threshold": f"values above {BINARIZE_THRESHOLD} set to 1, the others to 0 (training and test)",
    "none": "values used as they are",
}
_GREY_UNDER_BERNOULLI = (
    "; values other than 0 and 1 under a Bernoulli likelihood give the binary cross-entropy, "
    "not a normalized log-likelihood, so the bounds and bits/dim are not comparable with "
    "published (binarized) MNIST numbers"
)


@dataclass(frozen=True)
class ImageSplit:
    """Examples (N, ``*example_shape``) split into training and test rows, with their labels.

    Attributes:
        train: training rows, or None where only test rows were loaded.
        test: test rows.
        train_labels: int64 labels (N,) of the training rows, or None.
        test_labels: int64 labels of the test rows, or None.
        description: where the rows came from and how they were split.
        dataset: the :data:`IMAGE_DATASETS` name, or None for a file.
        labels_source: where the labels came from (None without labels).
    """

    train: torch.Tensor | None
    test: torch.Tensor
    train_labels: torch.Tensor | None = None
    test_labels: torch.Tensor | None = None
    description: str = ""
    dataset: str | None = None
    labels_source: str | None = None


def load_image_dataset(root: PathLike, dataset: str = "mnist", *, train: bool = True) -> ImageSplit:
    """MNIST (with its labels) or binarized MNIST (without) from the folder ``root``.

    Args:
        root: the folder of :func:`~pyrogen.data.mnist` or :func:`~pyrogen.data.binarized_mnist`.
        dataset: a name of :data:`IMAGE_DATASETS`.
        train: also load the train split (else ``train`` is None).

    Returns:
        the train split (60000 or 50000 rows) and the test split (10000 rows) as
        (N, 28, 28) float32 tensors.

    Raises:
        FileNotFoundError: a file of the data set is missing.
    """
    check_choice("dataset", dataset, IMAGE_DATASETS)
    root = Path(root)
    train_images = train_labels = labels = source = None
    if dataset == "mnist":
        test, labels = mnist(root, "test")
        if train:
            train_images, train_labels = mnist(root, "train")
        description, source = f"MNIST IDX files in {root}: ", f"the MNIST label files in {root}"
    else:
        test = binarized_mnist(root, "test").reshape(-1, *MNIST_IMAGE)
        if train:
            train_images = binarized_mnist(root, "train").reshape(-1, *MNIST_IMAGE)
        description = f"binarized MNIST (Larochelle & Murray) in {root / BINARIZED_MNIST_FILE}: "
    if train_images is not None:
        description += f"train split ({train_images.shape[0]} rows) for training, "
    description += f"test split ({test.shape[0]} rows)"
    return ImageSplit(train_images, test, train_labels, labels, description, dataset, source)


def read_labelled_array(
    data: PathLike,
    *,
    labels: str | None = None,
    columns: str | None = None,
    key: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, str | None]:
    """The examples of a data file and their class labels, if any.

    An NPZ archive of several arrays holds the images (the only other array, or one named as
    in :data:`IMAGE_KEYS`) and may hold their labels (named ``labels``, else as in
    :data:`LABEL_KEYS`).

    Args:
        data: the file (NPY/NPZ, CSV/TSV or IDX).
        labels: a labels file (NPY, NPZ of one array, or CSV/TSV of one column), the name
            of an array of ``data``, or the name of a column of a CSV/TSV ``data`` (then left
            out of x); None reads an array named as in :data:`LABEL_KEYS`.
        columns: comma-separated columns of a CSV/TSV ``data`` file.
        key: the array of an NPZ ``data`` archive holding the examples (default as above).

    Returns:
        ``(x, y, source)``: x (N, ...); y (N,) int64 or None; where y came from, e.g.
        ``"images.npz['y']"`` (None without labels).

    Example:
        >>> import numpy as np, tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "digits.npz"
        >>> np.savez(path, x=np.zeros((4, 2, 2)), y=np.array([0, 1, 1, 0]))
        >>> x, y, source = read_labelled_array(path)
        >>> tuple(x.shape), y.tolist(), source.endswith("digits.npz['y']")
        ((4, 2, 2), [0, 1, 1, 0], True)
    """
    data = Path(data)
    column = _label_column(data, labels, columns)
    if column is not None:
        return column
    keys = _npz_keys(data)
    label_key = None
    if keys is not None and len(keys) > 1:
        if labels is not None and labels in keys:
            label_key = labels
        elif labels is None:
            label_key = next((key for key in LABEL_KEYS if key in keys), None)
        rest = [key for key in keys if key != label_key]
        image_key = rest[0] if len(rest) == 1 else next((k for k in IMAGE_KEYS if k in rest), None)
        image_key = image_key if key is None else key
        if image_key is None:
            raise ValueError(
                f"data: expected an NPZ archive holding the images (named "
                f"{' or '.join(map(repr, IMAGE_KEYS))}) and at most their labels, got arrays "
                f"{', '.join(map(repr, keys))} in {data} (name the images' array with key='NAME')"
            )
        x = load(data, key=image_key)
    else:
        x = load(data, columns=None if columns is None else columns.split(","), key=key)
    if label_key is not None:
        source, values = f"{data}[{label_key!r}]", load(data, key=label_key)
    elif labels is not None:
        if not Path(labels).is_file():
            where = f" or an array of {data} ({', '.join(map(repr, keys))})" if keys else ""
            raise ValueError(f"labels: expected a labels file{where}, got {labels!r}")
        source, values = str(labels), load(labels)
    else:
        return x, None, None
    return x, label_vector(values, x.shape[0], source, data), source


def _label_column(
    data: Path, labels: str | None, columns: str | None
) -> tuple[torch.Tensor, torch.Tensor, str] | None:
    """Where ``labels`` names a column of the CSV/TSV ``data`` (and no file of that name
    exists): the other columns (or ``columns``), that column as labels, and its source."""
    if labels is None or Path(labels).is_file() or data.suffix.lower() not in (".csv", ".tsv"):
        return None
    if not data.is_file():
        return None
    delimiter = "\t" if data.suffix.lower() == ".tsv" else ","
    with data.open() as handle:
        first = next((line for line in handle if line.strip()), "")
    header = [name.strip().strip('"').strip() for name in first.rstrip("\n").split(delimiter)]
    if labels not in header:
        return None
    if columns is not None:
        names = [name.strip() for name in columns.split(",")]
    else:
        names = [name for name in header if name not in (labels, "", "rownames")]
    if labels in names:
        raise ValueError(f"labels: expected a column apart from --columns, got {labels!r} in both")
    source = f"{data}[{labels!r}]"
    x = load(data, columns=names)
    values = load(data, columns=[labels])
    return x, label_vector(values, x.shape[0], source, data), source


def _npz_keys(path: Path) -> list[str] | None:
    """The array names of an NPZ archive, or None when ``path`` is not one."""
    if not path.is_file() or not zipfile.is_zipfile(path):
        return None
    with zipfile.ZipFile(path) as archive:
        return [name[: -len(".npy")] for name in archive.namelist() if name.endswith(".npy")]


def load_images(
    data: PathLike | None = None,
    data_dir: PathLike | None = None,
    *,
    dataset: str | None = None,
    split_seed: int | None = None,
    labels: str | None = None,
    columns: str | None = None,
    key: str | None = None,
) -> ImageSplit:
    """The examples of a data set folder (its train and test splits) or of a data file (split
    at random into training and test rows), with their labels where there are some.

    Args:
        data: an array file (see :func:`read_labelled_array`); exclusive with ``data_dir``.
        data_dir: a folder of :data:`IMAGE_DATASETS` (see :func:`load_image_dataset`).
        dataset: what ``data_dir`` holds (default ``"mnist"``).
        split_seed: seed of the split of ``data`` (:func:`split_train_test`); None loads
            only test rows: every row of ``data``, the test split of ``data_dir``.
        labels: ``data``'s labels (a file, or an array of its NPZ archive).
        columns: columns of a CSV/TSV ``data`` file.
        key: the array of an NPZ ``data`` archive holding the examples.

    Example:
        >>> import numpy as np, tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "images.npy"
        >>> np.save(path, np.zeros((20, 4, 4), np.float32))
        >>> split = load_images(path, split_seed=0)
        >>> split.train.shape[0], split.test.shape[0]
        (18, 2)
    """
    if data is not None and data_dir is not None:
        raise ValueError(f"data, data_dir: expected one of them, got both ({data}, {data_dir})")
    if data is None and data_dir is None:
        raise ValueError(
            "data_dir, data: expected one of them (a folder of the MNIST IDX files, or an "
            "array file such as images.npy), got neither"
        )
    if data is None:
        for name, value in (("columns", columns), ("labels", labels), ("key", key)):
            if value is not None:
                raise ValueError(
                    f"{name}: expected none with data_dir (its images come with their own "
                    f"labels), got {value!r}"
                )
        dataset = dataset or IMAGE_DATASETS[0]
        try:
            return load_image_dataset(data_dir, dataset, train=split_seed is not None)
        except FileNotFoundError as error:
            message = f"data_dir: expected the {dataset} files in {data_dir}: {error}"
            raise ValueError(message) from error
    if dataset is not None:
        raise ValueError(
            f"dataset: expected data_dir with it (a data file is read as it is), got "
            f"dataset={dataset!r}"
        )
    x, y, source = read_labelled_array(data, labels=labels, columns=columns, key=key)
    if split_seed is None:
        return ImageSplit(None, x, None, y, f"{data}, all {x.shape[0]} rows", None, source)
    return split_train_test(x, y, seed=split_seed, source=str(data), labels_source=source)


def read_images(
    data: PathLike | None = None,
    data_dir: PathLike | None = None,
    *,
    dataset: str | None = None,
    binarize: str | None = None,
    likelihood: str = "gaussian",
    split_seed: int | None = None,
    labels: str | None = None,
    columns: str | None = None,
    key: str | None = None,
) -> tuple[ImageSplit, str, str]:
    """:func:`load_images` with their binarization mode (:func:`binarization_mode`), the
    values checked for both (:func:`check_unit_interval`).

    Returns:
        the split, the mode, and where the images came from (``data``, else ``data_dir``).
    """
    mode = binarization_mode(binarize, dataset, likelihood)
    split = load_images(
        data,
        data_dir,
        dataset=dataset,
        split_seed=split_seed,
        labels=labels,
        columns=columns,
        key=key,
    )
    source = str(data if data is not None else data_dir)
    check_unit_interval([split.train, split.test], source, mode, likelihood)
    return split, mode, source


@dataclass(frozen=True)
class ImageExamples:
    """Examples to score or to complete: ``x`` (N, ``*data_shape``) binarized (``binarize``,
    ``preprocessing``: the mode and what it did), their ``labels`` where the data have
    them, and where they came from."""

    x: torch.Tensor
    labels: torch.Tensor | None
    labels_source: str | None
    description: str
    binarize: str
    preprocessing: str


def prepare_examples(
    split: ImageSplit,
    mode: str,
    source: str,
    *,
    data_shape: Sequence[int],
    seed: int = 0,
    likelihood: str = "gaussian",
) -> ImageExamples:
    """The test rows of ``split`` (from :func:`read_images`) binarized by ``mode`` with
    ``seed`` (:func:`binarize`), reshaped to ``data_shape`` (:func:`as_rows`) and described.

    Example:
        >>> split = ImageSplit(None, torch.full((2, 2, 2), 0.5), description="a file")
        >>> prepare_examples(split, "threshold", "a file", data_shape=(4,)).x
        tensor([[0., 0., 0., 0.],
                [0., 0., 0., 0.]])
    """
    x = as_rows(binarize(split.test, mode, seed=seed), data_shape, source)
    how = describe_binarization(mode, seed=seed, likelihood=likelihood, x=x)
    return ImageExamples(x, split.test_labels, split.labels_source, split.description, mode, how)


def split_train_test(
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    *,
    seed: int,
    source: str = "data",
    labels_source: str | None = None,
    test_fraction: float = TEST_FRACTION,
) -> ImageSplit:
    """A seeded random split of the rows of ``x`` (and labels ``y``) into training and test.

    Args:
        x: examples (N, ...), N >= 2.
        y: their labels (N,), or None.
        seed: seed of the random order.
        source: what ``x`` is, for the description and errors (e.g. its file).
        labels_source: where ``y`` came from.
        test_fraction: the share of test rows (at least one).

    Example:
        >>> split = split_train_test(torch.arange(20.0).reshape(10, 2), seed=0)
        >>> split.train.shape[0], split.test.shape[0]
        (9, 1)
    """
    n_test = max(1, round(test_fraction * x.shape[0]))
    if x.shape[0] - n_test < 1:
        raise ValueError(
            f"{source}: expected at least 2 rows to split into training and test rows, got "
            f"{x.shape[0]}"
        )
    order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))
    train, test = order[n_test:], order[:n_test]
    description = (
        f"{source}, split at random (seed {seed}) into {x.shape[0] - n_test} training "
        f"and {n_test} test rows"
    )
    y_train, y_test = (None, None) if y is None else (y[train], y[test])
    return ImageSplit(x[train], x[test], y_train, y_test, description, None, labels_source)


# --- binarization ---------------------------------------------------------------------------
def binarize(x: torch.Tensor, mode: str, *, seed: int = 0) -> torch.Tensor:
    """``x`` (values in [0, 1]) binarized once.

    Args:
        x: examples, values in [0, 1] for ``"dynamic"``.
        mode: ``"dynamic"`` (a Bernoulli sample, from a generator seeded with ``seed``),
            ``"threshold"`` (above :data:`BINARIZE_THRESHOLD`: 1) or ``"none"`` (as is).

    Example:
        >>> binarize(torch.tensor([0.2, 0.7]), "threshold")
        tensor([0., 1.])
    """
    check_choice("binarize", mode, BINARIZE_MODES)
    if mode == "none":
        return x
    if mode == "threshold":
        return (x > BINARIZE_THRESHOLD).to(x.dtype)
    return torch.bernoulli(x, generator=torch.Generator().manual_seed(seed))


def dynamic_binarization(x: torch.Tensor, epoch: int, generator: torch.Generator) -> torch.Tensor:
    """A fresh Bernoulli sample of ``x`` (values in [0, 1]): the ``epoch_transform`` of
    :func:`pyrogen.fit` that trains on newly binarized images every epoch.

    Args:
        x: the training examples, pixel intensities in [0, 1].
        epoch: the epoch about to start (unused: every epoch is sampled alike).
        generator: the source of the draw, on the device of ``x`` (the engine's, seeded from
            the fit's seed and the epoch, so that a resumed fit draws the same samples).

    Example:
        >>> x = torch.full((2, 3), 0.5)
        >>> sample = dynamic_binarization(x, 0, torch.Generator().manual_seed(0))
        >>> sorted(set(sample.flatten().tolist())) <= [0.0, 1.0]
        True
    """
    return torch.bernoulli(x, generator=generator)


def binarization_mode(binarize: str | None, dataset: str | None, likelihood: str) -> str:
    """The binarization of images: ``binarize`` where given, else ``"dynamic"`` for MNIST
    under a Bernoulli likelihood and ``"none"`` otherwise (binarized MNIST is binary already).

    Example:
        >>> binarization_mode(None, "mnist", "bernoulli"), binarization_mode(None, None, "gaussian")
        ('dynamic', 'none')
    """
    if dataset == "binarized-mnist":
        if binarize not in (None, "none"):
            raise ValueError(
                f"binarize: expected none for dataset='binarized-mnist' (it is binary "
                f"already), got {binarize!r}"
            )
        return "none"
    if binarize is not None:
        check_choice("binarize", binarize, BINARIZE_MODES)
        return binarize
    return "dynamic" if dataset == "mnist" and likelihood == "bernoulli" else "none"


def image_likelihood(
    dataset: str | None, binarize: str | None = None, likelihood: str | None = None
) -> str:
    """The likelihood of images: ``likelihood`` where given, else ``"bernoulli"`` for 0/1 data
    (binarized MNIST, or ``binarize`` other than none), ``"discretized"`` for MNIST and
    ``"gaussian"`` otherwise; binarized data need the Bernoulli one.

    Example:
        >>> image_likelihood("mnist"), image_likelihood("mnist", "dynamic"), image_likelihood(None)
        ('discretized', 'bernoulli', 'gaussian')
    """
    binary = binarize not in (None, "none")
    if likelihood is None:
        binary_data = binary or dataset == "binarized-mnist"
        likelihood = "bernoulli" if binary_data else "discretized" if dataset == "mnist" else ""
        likelihood = likelihood or "gaussian"
    if binary and likelihood != "bernoulli":
        raise ValueError(
            f"binarize: {binarize} gives 0/1 data, for likelihood='bernoulli'; got {likelihood}"
        )
    return likelihood


def describe_binarization(mode: str, *, seed: int, likelihood: str, x: torch.Tensor) -> str:
    """What ``mode`` does, for summaries: with ``seed`` the run's, and a warning where
    non-binary values ``x`` meet a Bernoulli likelihood."""
    how = _BINARIZATIONS[mode].format(seed=seed)
    if mode == "none" and likelihood == "bernoulli" and not bool(((x == 0) | (x == 1)).all()):
        how += _GREY_UNDER_BERNOULLI
    return how


def check_unit_interval(
    parts: Sequence[torch.Tensor | None], source: str, binarize: str, likelihood: str
) -> None:
    """Raise unless every value of ``parts`` lies in [0, 1], where binarization or a
    Bernoulli likelihood needs it (not for ``binarize="none"`` with a Gaussian one)."""
    if binarize == "none" and likelihood == "gaussian":
        return
    present = [x for x in parts if x is not None]
    low = min(float(x.min()) for x in present)
    high = max(float(x.max()) for x in present)
    if low < 0 or high > 1:
        need = "binarization" if binarize != "none" else f"a {likelihood} likelihood"
        raise ValueError(
            f"{source}: expected values in [0, 1] for {need}, got values in [{low:g}, "
            f"{high:g}] (scale the data to [0, 1], or use --likelihood gaussian)"
        )


# --- shapes ---------------------------------------------------------------------------------
def image_data_shape(example_shape: Sequence[int], encoder: str) -> tuple[int, ...]:
    """A network's ``data_shape`` for examples of ``example_shape``: flat for ``"mlp"``,
    (C, H, W) for ``"conv"``.

    Example:
        >>> image_data_shape((28, 28), "mlp"), image_data_shape((28, 28), "conv")
        ((784,), (1, 28, 28))
    """
    example_shape = tuple(example_shape)
    if encoder != "conv":
        return (math.prod(example_shape),)
    if len(example_shape) in (2, 3):
        return example_shape if len(example_shape) == 3 else (1, *example_shape)
    raise ValueError(
        f"encoder: expected images, examples of shape (H, W) or (C, H, W), for 'conv', got "
        f"examples of shape {example_shape} (use --encoder mlp, or reshape the array)"
    )


def as_rows(x: torch.Tensor, data_shape: Sequence[int], source: str = "x") -> torch.Tensor:
    """``x`` (N, ...) reshaped to (N, ``*data_shape``), when each example has as many values."""
    example = tuple(x.shape[1:])
    if math.prod(example) != math.prod(data_shape):
        raise ValueError(
            f"{source}: expected examples of shape {tuple(data_shape)} (or "
            f"{math.prod(data_shape)} values each) for this model, got examples of shape "
            f"{example}"
        )
    return x.reshape(x.shape[0], *data_shape)


# --- labels ---------------------------------------------------------------------------------
def label_vector(values: torch.Tensor, rows: int, source: str, data: PathLike) -> torch.Tensor:
    """``values`` as int64 class labels (rows,): one integer per example of ``data``."""
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


def count_classes(
    labels: Sequence[torch.Tensor | None], source: str, num_classes: int | None = None
) -> int:
    """C: ``num_classes``, else the largest label + 1 where every class 0..C-1 is present;
    checked against ``labels`` (-1, an unlabelled row, is ignored)."""
    present = [y for y in labels if y is not None]
    known = torch.cat(present)[torch.cat(present) >= 0] if present else torch.zeros(0)
    if known.numel() == 0:
        raise ValueError(f"{source}: expected class labels 0, 1, ..., got no labelled rows")
    largest = int(known.max())
    if num_classes is None:
        if largest < 1:
            raise ValueError(
                f"{source}: expected labels of at least 2 classes, got only class {largest} "
                "(give --num-classes C to say how many there are)"
            )
        missing = sorted(set(range(largest + 1)) - set(known.unique().tolist()))
        if missing:
            shown = ", ".join(map(str, missing[:5])) + (", ..." if len(missing) > 5 else "")
            raise ValueError(
                f"{source}: expected labels of every class 0..{largest} (C is the largest label "
                f"+ 1), got none of {len(missing)} of them ({shown}); give --num-classes C to "
                "train with classes absent from the data"
            )
        return largest + 1
    if largest >= num_classes:
        raise ValueError(
            f"{source}: expected labels in 0..{num_classes - 1} (--num-classes {num_classes}), "
            f"got {largest} in {int((known == largest).sum())} row(s)"
        )
    return num_classes


def check_classes(
    labels: torch.Tensor, num_classes: int, source: str, *, unlabelled: bool = False
) -> torch.Tensor:
    """``labels``, checked to lie in 0..C-1 (or be -1, "unlabelled", where allowed)."""
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


def balanced_labels(
    labels: torch.Tensor, labelled: int, num_classes: int, seed: int
) -> tuple[torch.Tensor, list[int]]:
    """Keep ``labelled`` labels, as evenly spread over the classes as the rows allow.

    Each class gets ``labelled // C`` rows, ``labelled % C`` classes chosen at random one
    more; a class with too few rows gives all it has and the rest is shared among the others.
    The rows of each class are taken in a seeded random order, so with one seed a smaller
    subset lies inside a larger one.

    Returns:
        the labels with every other row set to -1 (unlabelled), and the rows kept per class.

    Example:
        >>> kept, counts = balanced_labels(torch.tensor([0, 0, 1, 1, 1]), 2, 2, seed=0)
        >>> counts
        [1, 1]
    """
    known = int((labels >= 0).sum())
    if labelled > known:
        raise ValueError(
            f"labelled: expected at most {known} (the training rows with a label), got {labelled}"
        )
    generator = torch.Generator().manual_seed(seed)
    rows = [(labels == k).nonzero()[:, 0] for k in range(num_classes)]
    rows = [r[torch.randperm(len(r), generator=generator)] for r in rows]
    taken, remaining = [0] * num_classes, labelled
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
        kept[rows[k][: taken[k]]] = k
    return kept, taken


def condition_labels(
    split: ImageSplit, num_classes: int | None = None, *, unlabelled: bool = False
) -> tuple[int, torch.Tensor | None, torch.Tensor | None]:
    """C (``num_classes``, else the largest label + 1) and the split's training and test
    labels checked against it (-1 allowed where ``unlabelled``), as in :func:`count_classes`
    and :func:`check_classes`.

    Example:
        >>> split = ImageSplit(None, torch.zeros(3, 2), torch.tensor([0, 2]), torch.tensor([1]))
        >>> condition_labels(split)[0]
        3
    """
    source = split.labels_source
    classes = count_classes([split.train_labels, split.test_labels], source, num_classes)
    train, test = (
        None if y is None else check_classes(y, classes, source, unlabelled=unlabelled)
        for y in (split.train_labels, split.test_labels)
    )
    return classes, train, test


def semi_supervised_labels(
    labels: torch.Tensor,
    num_classes: int,
    labelled: int | None = None,
    seed: int = 0,
    source: str = "labels",
) -> tuple[torch.Tensor, str]:
    """The training labels of semi-supervised training (-1: unlabelled) and what they are.

    With ``labelled``, :func:`balanced_labels` keeps that many; without, ``labels`` as they
    are, which must label at least one row (``source`` names them in that error).

    Example:
        >>> semi_supervised_labels(torch.tensor([0, -1, 1]), 2)[1]
        '2 of the 3 training rows labelled'
    """
    rows = len(labels)
    if labelled is not None:
        kept, counts = balanced_labels(labels, labelled, num_classes, seed)
        return kept, (
            f"{labelled} of the {rows} training rows keep their labels "
            f"({describe_counts(counts)}, chosen at random with seed {seed}); the "
            f"other {rows - labelled} are unlabelled"
        )
    known = int((labels >= 0).sum())
    if known == 0:
        raise ValueError(
            f"{source}: expected some labelled training rows (labels >= 0), got none of {rows}"
        )
    return labels, f"{known} of the {rows} training rows labelled" + (
        " (all of them: supervised; --labelled N keeps N)" if known == rows else ""
    )


def describe_counts(counts: Sequence[int]) -> str:
    """ "10 per class", or "9 to 11 per class" when they differ."""
    low, high = min(counts), max(counts)
    return f"{low} per class" if low == high else f"{low} to {high} per class"
