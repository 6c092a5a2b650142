"""``pyrogen fit vae``, and what the commands of the VAE variants (cvae, ssvae, gmvae) share
with it: the options of the networks and of training, how images and their labels are
loaded, split and binarized, and the fit (resampling the binarization every epoch). A
variant's module holds only what differs, as a :class:`_VAEFamily`. ``pyrogen evaluate`` and
``pyrogen sample`` reuse the loading and binarization (:func:`_images_for`), so a run is
scored on the data it was tested on.
"""

from __future__ import annotations

import argparse
import inspect
import math
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyro
import torch
from tqdm.auto import tqdm

from pyrogen.cli.common import (
    _default_of,
    _FitCommand,
    _Fitted,
    _hardware,
    _positive_float,
    _positive_int,
    _progress,
)
from pyrogen.cli.labels import _read_images_and_labels
from pyrogen.data.datasets import BINARIZED_MNIST_FILE, binarized_mnist, mnist
from pyrogen.diagnostics.report import DEFAULT_IW_SAMPLES
from pyrogen.infer import distributed
from pyrogen.infer.engine import Callback, FitResult, fit
from pyrogen.models import VAE, GenerativeModel
from pyrogen.models.vae import LIKELIHOODS, POSTERIORS
from pyrogen.nn import KINDS as NETWORKS

#: ``--dataset`` of ``--data-dir``.
DATASETS = ("mnist", "binarized-mnist")
#: ``--binarize`` modes (see ``_BINARIZATIONS``).
BINARIZE_MODES = ("dynamic", "threshold", "none")
#: Epochs of ``pyrogen fit vae`` when neither --epochs nor --steps is given.
DEFAULT_EPOCHS = 10
#: Share of the rows of a ``--data`` file held out for testing (a seeded random split).
TEST_FRACTION = 0.1
#: Shape of one MNIST image (binarized MNIST stores them flat).
MNIST_IMAGE = (28, 28)
#: Threshold of ``--binarize threshold``.
BINARIZE_THRESHOLD = 0.5

#: What each ``--binarize`` mode does, as written to summary.json and printed.
_BINARIZATIONS = {
    "dynamic": "training images resampled as Bernoulli(pixel intensity) at the start of "
    "every epoch (generator seed {train_seed}); test images sampled once the same way "
    "(generator seed {seed}), so every evaluation with this seed sees the same test set",
    "threshold": f"values above {BINARIZE_THRESHOLD} set to 1, the others to 0 (training and test)",
    "none": "values used as they are",
}
_GREY_UNDER_BERNOULLI = (
    "; values other than 0 and 1 under a Bernoulli likelihood give the binary cross-entropy, "
    "not a normalized log-likelihood, so the bounds and bits/dim are not comparable with "
    "published (binarized) MNIST numbers"
)


def _add_data_dir_option(group: Any, use: str) -> None:
    group.add_argument(
        "--data-dir",
        type=Path,
        metavar="DIR",
        help="folder of the MNIST IDX files ({train,t10k}-{images-idx3,labels-idx1}-ubyte, "
        f"plain or .gz; get them with pyrogen.data.download_mnist), or with --dataset "
        f"binarized-mnist the folder holding {BINARIZED_MNIST_FILE}; {use}",
    )


def _add_binarize_option(group: Any, default: str) -> None:
    group.add_argument(
        "--binarize",
        choices=BINARIZE_MODES,
        help="dynamic: training images are resampled as Bernoulli(pixel intensity) at the "
        "start of every epoch (the engine is resumed from a checkpoint each epoch, so "
        "optimizer and random state carry over exactly) and test images are sampled once "
        f"with the seed; threshold: values above {BINARIZE_THRESHOLD} become 1, the others 0; "
        f"none: values as they are. {default}",
    )


def _add_image_data_options(parser: argparse.ArgumentParser, name: str) -> None:
    """--data-dir, --dataset, --binarize and --limit: image data sets and their split."""
    data = parser.add_argument_group(f"{name} data")
    _add_data_dir_option(data, "trains on the train split and scores the test split")
    data.add_argument(
        "--dataset",
        choices=DATASETS,
        help="what --data-dir holds (default mnist); binarized-mnist is the fixed "
        "binarization of Larochelle & Murray (its valid split is not used)",
    )
    _add_binarize_option(
        data, "Default dynamic for --dataset mnist with the bernoulli likelihood, else none."
    )
    data.add_argument(
        "--limit",
        type=_positive_int,
        metavar="N",
        help="train on the first N training rows only (quick runs); the test set is whole",
    )


def _add_vae_options(
    parser: argparse.ArgumentParser,
    model_class: type[VAE] = VAE,
    *,
    iw_samples: int = DEFAULT_IW_SAMPLES,
    iw_note: str = "",
) -> None:
    """The options of the networks, the data and training that every VAE family shares.

    Defaults follow ``model_class``'s own; ``--beta`` and ``--objective`` are offered only
    where its constructor takes them (and has more than one objective).
    """
    name = model_class.__name__
    _add_image_data_options(parser, name)
    model = parser.add_argument_group(f"{name} model")
    model.add_argument(
        "--latent-dim",
        type=_positive_int,
        default=_default_of(model_class, "latent_dim"),
        metavar="L",
        help="dimension of z (default %(default)s); with 2 latent.png shows z itself, "
        "otherwise its first two principal components",
    )
    model.add_argument(
        "--likelihood",
        choices=LIKELIHOODS,
        default=_default_of(model_class, "likelihood"),
        help="p(x | z) (default %(default)s)",
    )
    model.add_argument(
        "--encoder",
        choices=NETWORKS,
        default=_default_of(model_class, "encoder"),
        help="encoder network, mirrored by the decoder (default %(default)s); mlp sees "
        "flattened examples (784,), conv images (C, H, W) such as (1, 28, 28)",
    )
    if _takes(model_class, "beta"):
        model.add_argument(
            "--beta",
            type=_positive_float,
            default=_default_of(model_class, "beta"),
            metavar="B",
            help="weight of the KL term, beta-VAE (default %(default)s; reported bounds are at 1)",
        )
    if _takes(model_class, "objective") and len(model_class.objectives) > 1:
        model.add_argument(
            "--objective",
            choices=model_class.objectives,
            default=_default_of(model_class, "objective"),
            help="training bound: mean_field (ELBO, analytic KL), elbo (Monte Carlo KL) or "
            "iwae (importance weighted, with --particles samples); default mean_field, or "
            "elbo with a flow --posterior",
        )
    if _takes(model_class, "posterior"):
        model.add_argument(
            "--posterior",
            choices=POSTERIORS,
            default="gaussian",
            help="q(z | x): the encoder's Gaussian, or an inverse-autoregressive flow on it "
            "(iaf: affine steps, nsf: spline steps); default gaussian",
        )
        model.add_argument(
            "--flow-transforms",
            type=_positive_int,
            default=_default_of(model_class, "flow_transforms"),
            metavar="K",
            help="flow steps of a flow --posterior (default %(default)s)",
        )
    model.add_argument(
        "--particles",
        type=_positive_int,
        default=_default_of(model_class, "num_particles"),
        metavar="K",
        help="samples per example in the training objective (default %(default)s)",
    )
    training = parser.add_argument_group(f"{name} training and evaluation")
    training.add_argument(
        "--epochs",
        type=_positive_int,
        metavar="E",
        help=f"passes over the training rows (default {DEFAULT_EPOCHS}; exclusive with --steps)",
    )
    training.add_argument(
        "--batch-size",
        type=_positive_int,
        default=model_class.fit_defaults["batch_size"],
        metavar="B",
        help="rows per step (default %(default)s)",
    )
    training.add_argument(
        "--iw-samples",
        type=_positive_int,
        default=iw_samples,
        metavar="K",
        help=f"importance samples of the test log-likelihood bound (default %(default)s){iw_note}",
    )


def _takes(model_class: type[VAE], argument: str) -> bool:
    return argument in inspect.signature(model_class).parameters


def _network_options(args: argparse.Namespace) -> dict[str, Any]:
    """Constructor keywords from the shared options (those the family offers)."""
    options = {
        "latent_dim": args.latent_dim,
        "likelihood": args.likelihood,
        "encoder": args.encoder,
        "decoder": args.encoder,
        "num_particles": args.particles,
    }
    for name in ("beta", "objective", "posterior", "flow_transforms"):
        if hasattr(args, name):
            options[name] = getattr(args, name)
    return options


@dataclass(frozen=True)
class _Images:
    """Examples as loaded, (N, *example_shape), before binarization and reshaping."""

    train: torch.Tensor | None  # None when nothing is trained (evaluate)
    test: torch.Tensor
    test_labels: torch.Tensor | None
    description: str  # where they came from and how they were split
    dataset: str | None  # a DATASETS name, or None for a --data file
    train_labels: torch.Tensor | None = None
    labels_source: str | None = None  # where the labels came from; None without labels


@dataclass(frozen=True)
class _Labels:
    """The labels (N,) of the training and test rows as loaded (None: no labels), and where
    they came from."""

    train: torch.Tensor | None
    test: torch.Tensor | None
    source: str | None


@dataclass
class _Setup:
    """What a family makes of the labels: its constructor keywords, the labels ``fit`` gets
    (-1: unlabelled), those of the test rows (for the report) and entries of summary.json."""

    options: dict[str, Any] = field(default_factory=dict)
    train_labels: torch.Tensor | None = None
    test_labels: torch.Tensor | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _test_labels_only(args: argparse.Namespace, labels: _Labels) -> _Setup:
    """Families trained without labels: test labels, where known, only colour latent.png."""
    return _Setup(test_labels=labels.test)


#: ``prepare(args, model, train, steps_per_epoch, steps)``: callbacks of the fit and entries
#: of summary.json; ``train`` is the training rows (N, *data_shape), binarized once.
_Prepare = Callable[
    [argparse.Namespace, VAE, torch.Tensor, int, int], tuple[list[Callback], dict[str, Any]]
]


@dataclass(frozen=True)
class _VAEFamily:
    """How a VAE family's ``pyrogen fit`` differs from the plain VAE's: its class, what it
    does with labels (``configure``) and what it does during training (``prepare``)."""

    model_class: type[VAE] = VAE
    configure: Callable[[argparse.Namespace, _Labels], _Setup] = _test_labels_only
    prepare: _Prepare | None = None


def _fit_vae(args: argparse.Namespace) -> _Fitted:
    """``pyrogen fit vae``."""
    return _fit_vae_family(args, _VAEFamily())


def _fit_vae_family(args: argparse.Namespace, family: _VAEFamily) -> _Fitted:
    """Load, binarize and shape the data, fit the family's model on the train rows (with
    their labels, where the family takes them), hold out the test rows."""
    if args.steps is not None and args.epochs is not None:
        raise ValueError(
            f"--steps, --epochs: expected at most one of them, got both ({args.steps}, "
            f"{args.epochs})"
        )
    dataset = _dataset(args.dataset, args.data_dir)
    mode = _binarize_mode(args.binarize, dataset, args.likelihood)  # checked before loading
    images = _load_images(
        args.data_dir,
        args.data,
        args.columns,
        dataset,
        args.seed,
        labels=getattr(args, "labels", None),
    )
    if images.train is None:
        raise ValueError("data: expected training rows, got none")
    source = str(args.data if args.data is not None else args.data_dir)
    _check_values((images.train, images.test), source, mode, args.likelihood)
    train, train_labels = images.train, images.train_labels
    description = images.description
    if args.limit is not None and args.limit < train.shape[0]:
        description += f"; training on its first {args.limit} of {train.shape[0]} rows (--limit)"
        train = train[: args.limit]
        train_labels = None if train_labels is None else train_labels[: args.limit]
    setup = family.configure(args, _Labels(train_labels, images.test_labels, images.labels_source))
    example_shape = tuple(train.shape[1:])
    data_shape = _vae_data_shape(example_shape, args.encoder)
    pyro.set_rng_seed(args.seed)  # the networks' initial weights are drawn here
    model = family.model_class(data_shape, **_network_options(args), **setup.options)
    train = _as_rows(train, data_shape, source)
    test = _as_rows(_binarize(images.test, mode, seed=args.seed), data_shape, source)
    steps_per_epoch = _steps_per_epoch(model, train.shape[0], args.batch_size, setup.train_labels)
    steps = args.steps or steps_per_epoch * (args.epochs or DEFAULT_EPOCHS)
    callbacks, prepared = [], {}
    if family.prepare is not None:
        # The training rows as the first epoch sees them (dynamic: the same Bernoulli draw).
        rows = _binarize(train, mode, seed=_train_seed(args.seed))
        callbacks, prepared = family.prepare(args, model, rows, steps_per_epoch, steps)
    options = {
        "y": setup.train_labels,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "callbacks": callbacks,
        **_hardware(args),
    }
    result = _fit_binarized(model, train, mode, steps, steps_per_epoch, args, **options)
    how = _BINARIZATIONS[mode].format(seed=args.seed, train_seed=_train_seed(args.seed))
    if mode == "none" and args.likelihood == "bernoulli" and not _is_binary(train):
        how += _GREY_UNDER_BERNOULLI
    extra = {
        "data": description,
        "dataset": images.dataset,
        "preprocessing": {"binarize": mode, "description": how},
        "limit": args.limit,
        "epochs": result.steps / steps_per_epoch,
        "batch_size": min(args.batch_size, train.shape[0]),
        **setup.extra,
        **prepared,
    }
    return _Fitted(
        model,
        result,
        train,
        extra=extra,
        test_data=test,
        test_labels=setup.test_labels,
        image_shape=example_shape if len(example_shape) in (2, 3) else None,
        iw_samples=args.iw_samples,
    )


def _fit_binarized(
    model: GenerativeModel,
    train: torch.Tensor,
    mode: str,
    steps: int,
    steps_per_epoch: int,
    args: argparse.Namespace,
    **options: Any,
) -> FitResult:
    """``fit`` on the training rows binarized by ``mode``: once, or afresh every epoch."""
    if mode == "dynamic":
        return _fit_resampling_each_epoch(
            model,
            train,
            steps,
            steps_per_epoch,
            quiet=args.quiet,
            binarize_seed=_train_seed(args.seed),
            **options,
        )
    return fit(model, _binarize(train, mode), steps=steps, progress=_progress(args), **options)


def _steps_per_epoch(
    model: GenerativeModel, rows: int, batch_size: int, y: torch.Tensor | None
) -> int:
    """Steps of one epoch as the engine counts them: the family's ``minibatch_order`` taken
    ``batch_size`` rows at a time, and a batch as large as the data one full-batch step."""
    if batch_size >= rows:
        return 1
    order = model.minibatch_order(rows, batch_size, y, torch.Generator().manual_seed(0))
    return math.ceil(len(order) / batch_size)


def _train_seed(seed: int) -> int:
    """Seed of the training binarization: a stream apart from the test set's."""
    return seed + 1


def _fit_resampling_each_epoch(
    model: GenerativeModel,
    grey: torch.Tensor,
    steps: int,
    steps_per_epoch: int,
    *,
    quiet: bool,
    binarize_seed: int,
    callbacks: Sequence[Callback] = (),
    **options: Any,
) -> FitResult:
    """Fit on a fresh Bernoulli sample of ``grey`` (N, ...) in [0, 1] every epoch.

    The engine takes one data tensor per call, so each epoch is one call that resumes the
    previous one from a checkpoint in a temporary folder: parameters, optimizer state, step,
    loss history and random state carry over exactly, as in one uninterrupted fit.

    Args:
        model: the model to train.
        grey: training examples (N, *data_shape), values in [0, 1] (Bernoulli means).
        steps: optimisation steps in all.
        steps_per_epoch: steps of one pass over the N rows.
        quiet: no progress bar (there is one on a terminal otherwise).
        binarize_seed: seed of the generator of the epochs' samples.
        callbacks: more callbacks of :func:`pyrogen.fit`, called with the overall step.
        options: more keywords of :func:`pyrogen.fit` (y, batch_size, seed, device).

    Returns:
        the last call's FitResult, with ``time_s`` summed over the epochs.
    """
    generator = torch.Generator().manual_seed(binarize_seed)
    where = distributed.cluster()
    show = not quiet and sys.stderr.isatty() and where.is_main
    elapsed, done = 0.0, 0
    with (
        tempfile.TemporaryDirectory(prefix="pyrogen-fit-") as own_folder,
        tqdm(total=steps, disable=not show, desc=model.family) as bar,
    ):
        # Training processes resume from one file: the first process's (on one node).
        folder = distributed.all_gather_objects(own_folder, where)[0]

        def advance(step: int, loss: float, _: GenerativeModel) -> None:
            bar.update(1)
            if step % 10 == 0:
                bar.set_postfix(epoch=math.ceil(step / steps_per_epoch), loss=f"{loss:.4f}")

        while True:
            epoch_data = torch.bernoulli(grey, generator=generator)
            result = fit(
                model,
                epoch_data,
                steps=min(done + steps_per_epoch, steps),
                checkpoint=Path(folder) / "training.pt",
                resume=True,
                callbacks=[advance, *callbacks],
                progress=False,
                **options,
            )
            elapsed += result.time_s
            if result.steps >= steps or result.steps <= done or result.stopped_early:
                break
            done = result.steps
    result.time_s = elapsed
    return result


def _dataset(
    requested: str | None, data_dir: Path | None, default: str | None = None
) -> str | None:
    """What ``--data-dir`` holds (``--dataset``, else ``default``, else mnist); None for files."""
    if data_dir is None:
        if requested is not None:
            raise ValueError(
                f"--dataset: expected --data-dir with it (a --data file is read as it is), "
                f"got --dataset {requested}"
            )
        return None
    return requested or default or DATASETS[0]


def _load_images(
    data_dir: Path | None,
    data: Path | None,
    columns: str | None,
    dataset: str | None,
    split_seed: int | None,
    *,
    labels: str | None = None,
) -> _Images:
    """The examples of ``--data-dir`` (its train and test splits) or of a ``--data`` file,
    with their labels where there are some.

    Args:
        split_seed: seed of the random train/test split of a ``--data`` file; None loads
            no training rows (every row of the file is a test row, as ``evaluate`` wants).
        labels: ``--labels`` (a file, or an array of the ``--data`` NPZ archive); see
            :func:`pyrogen.cli.labels._read_images_and_labels`.
    """
    if data_dir is not None and data is not None:
        raise ValueError(f"--data, --data-dir: expected one of them, got both ({data}, {data_dir})")
    if data_dir is None and data is None:
        raise ValueError(
            "--data-dir, --data: expected one of them (e.g. --data-dir DIR holding the MNIST "
            "IDX files, or --data FILE.npy), got neither"
        )
    if data is None:
        if columns is not None:
            raise ValueError(f"--columns: expected none with --data-dir (images), got {columns!r}")
        if labels is not None:
            raise ValueError(
                f"--labels: expected none with --data-dir (its labels are read with the "
                f"images), got {labels!r}"
            )
        return _load_dataset(data_dir, dataset or DATASETS[0], train=split_seed is not None)
    x, y, source = _read_images_and_labels(data, columns, labels)
    if split_seed is None:
        return _Images(None, x, y, f"{data}, all {x.shape[0]} rows", None, None, source)
    n_test = max(1, round(TEST_FRACTION * x.shape[0]))
    if x.shape[0] - n_test < 1:
        raise ValueError(
            f"{data}: expected at least 2 rows to split into training and test rows, got "
            f"{x.shape[0]}"
        )
    order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(split_seed))
    description = (
        f"{data}, split at random (seed {split_seed}) into {x.shape[0] - n_test} training "
        f"and {n_test} test rows"
    )
    train, test = order[n_test:], order[:n_test]
    return _Images(
        x[train],
        x[test],
        None if y is None else y[test],
        description,
        None,
        None if y is None else y[train],
        source,
    )


def _load_dataset(root: Path, dataset: str, *, train: bool) -> _Images:
    """MNIST (images and labels) or binarized MNIST (images) from ``root``."""
    train_labels = None
    try:
        if dataset == "mnist":
            test, labels = mnist(root, "test")
            train_images, train_labels = mnist(root, "train") if train else (None, None)
            description = f"MNIST IDX files in {root}: "
            source = f"the MNIST label files in {root}"
        else:
            test, labels = binarized_mnist(root, "test").reshape(-1, *MNIST_IMAGE), None
            train_images = (
                binarized_mnist(root, "train").reshape(-1, *MNIST_IMAGE) if train else None
            )
            description = (
                f"binarized MNIST (Larochelle & Murray) in {root / BINARIZED_MNIST_FILE}: "
            )
            source = None
    except FileNotFoundError as error:
        raise ValueError(f"--data-dir: expected the {dataset} files in {root}: {error}") from error
    if train_images is not None:
        description += f"train split ({train_images.shape[0]} rows) for training, "
    return _Images(
        train_images,
        test,
        labels,
        description + f"test split ({test.shape[0]} rows)",
        dataset,
        train_labels,
        source,
    )


@dataclass(frozen=True)
class _Examples:
    """Examples to score or to complete under a fitted model, prepared as in its run."""

    x: torch.Tensor  # (N, *data_shape), binarized as the run was
    labels: torch.Tensor | None  # (N,), where the data have labels
    labels_source: str | None
    description: str  # where they came from
    binarize: str  # the --binarize mode applied
    preprocessing: str  # what it did


def _images_for(args: argparse.Namespace, model: GenerativeModel, run: dict[str, Any]) -> _Examples:
    """The test split of ``--data-dir``, or every row of ``--data``, prepared like the run's
    test rows (same --binarize mode and seed, so the same test images) for ``model``.

    Defaults come from the run (its dataset, binarization and seed); ``args`` holds the
    options of ``evaluate`` or ``sample`` (data_dir, data, dataset, binarize, seed, and
    columns and labels where the command has them).
    """
    seed = args.seed if args.seed is not None else run.get("seed", 0)
    dataset = _dataset(args.dataset, args.data_dir, default=run.get("dataset"))
    requested = args.binarize
    if requested is None and dataset != "binarized-mnist":
        requested = run.get("preprocessing", {}).get("binarize")
    likelihood = getattr(model, "likelihood", "gaussian")
    mode = _binarize_mode(requested, dataset, likelihood)
    images = _load_images(
        args.data_dir,
        args.data,
        getattr(args, "columns", None),
        dataset,
        split_seed=None,
        labels=getattr(args, "labels", None),
    )
    source = str(args.data if args.data is not None else args.data_dir)
    _check_values((images.test,), source, mode, likelihood)
    x = _as_rows(_binarize(images.test, mode, seed=seed), model.data_shape, source)
    how = _BINARIZATIONS[mode].format(seed=seed, train_seed=_train_seed(seed))
    if mode == "none" and likelihood == "bernoulli" and not _is_binary(x):
        how += _GREY_UNDER_BERNOULLI
    return _Examples(x, images.test_labels, images.labels_source, images.description, mode, how)


def _binarize_mode(requested: str | None, dataset: str | None, likelihood: str) -> str:
    """The ``--binarize`` mode: as requested, else dynamic for MNIST under a Bernoulli."""
    if dataset == "binarized-mnist":
        if requested not in (None, "none"):
            raise ValueError(
                f"--binarize: expected none for --dataset binarized-mnist (it is binary "
                f"already), got {requested!r}"
            )
        return "none"
    if requested is not None:
        return requested
    return "dynamic" if dataset == "mnist" and likelihood == "bernoulli" else "none"


def _binarize(x: torch.Tensor, mode: str, *, seed: int = 0) -> torch.Tensor:
    """``x`` binarized once: a Bernoulli sample (dynamic, from ``seed``), a threshold, or as is."""
    if mode == "none":
        return x
    if mode == "threshold":
        return (x > BINARIZE_THRESHOLD).to(x.dtype)
    return torch.bernoulli(x, generator=torch.Generator().manual_seed(seed))


def _is_binary(x: torch.Tensor) -> bool:
    return bool(((x == 0) | (x == 1)).all())


def _check_values(
    parts: Sequence[torch.Tensor | None], source: str, mode: str, likelihood: str
) -> None:
    """Binarization and the Bernoulli likelihoods need values in [0, 1]; say so by file."""
    if mode == "none" and likelihood == "gaussian":
        return
    present = [x for x in parts if x is not None]
    low = min(float(x.min()) for x in present)
    high = max(float(x.max()) for x in present)
    if low < 0 or high > 1:
        need = "binarization" if mode != "none" else f"a {likelihood} likelihood"
        raise ValueError(
            f"{source}: expected values in [0, 1] for {need}, got values in [{low:g}, "
            f"{high:g}] (scale the data to [0, 1], or use --likelihood gaussian)"
        )


def _vae_data_shape(example_shape: tuple[int, ...], encoder: str) -> tuple[int, ...]:
    """The VAE's ``data_shape``: flat for mlp, (C, H, W) for conv."""
    if encoder == "mlp":
        return (math.prod(example_shape),)
    if len(example_shape) == 2:
        return (1, *example_shape)
    if len(example_shape) == 3:
        return example_shape
    raise ValueError(
        f"--encoder: expected images, examples of shape (H, W) or (C, H, W), for 'conv', got "
        f"examples of shape {example_shape} (use --encoder mlp, or reshape the array)"
    )


def _as_rows(x: torch.Tensor, data_shape: Sequence[int], source: str) -> torch.Tensor:
    """``x`` (N, ...) reshaped to (N, *data_shape), when each example has as many values."""
    example = tuple(x.shape[1:])
    if math.prod(example) != math.prod(data_shape):
        raise ValueError(
            f"{source}: expected examples of shape {tuple(data_shape)} (or "
            f"{math.prod(data_shape)} values each) for this model, got examples of shape "
            f"{example}"
        )
    return x.reshape(x.shape[0], *data_shape)


#: Help of ``--data`` for every VAE family.
VAE_DATA_HELP = (
    "an NPY/NPZ array (N, *shape) with values in [0, 1] (CSV/TSV also read), split at "
    f"random (seeded) into {1 - TEST_FRACTION:.0%}% training and {TEST_FRACTION:.0%}% test "
    "rows; an NPZ archive may also hold their labels (an array named y or labels, the "
    "images x or images); one of --data and --data-dir is required"
)

#: The VAE's part of ``pyrogen fit`` (its entry in ``pyrogen.cli._FIT_COMMANDS``).
FIT_COMMAND = _FitCommand(_add_vae_options, _fit_vae, VAE_DATA_HELP)
