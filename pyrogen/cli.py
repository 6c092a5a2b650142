"""The ``pyrogen`` command: fit a model to data, sample from it, evaluate it.

Thin on purpose: it parses arguments, calls the public API and prints, so everything it does
can be done from Python too. ``pyrogen fit FAMILY`` has one sub-command per family of
:data:`pyrogen.models.REGISTRY`; a family's own options, how it loads its data and how it
is fitted come from its entry in ``_FIT_COMMANDS``. Every family's run folder is written by
:func:`pyrogen.diagnostics.write_run`.

Exit codes: 0 success, 2 bad input (usage, files, values; one ``pyrogen: error:`` line and
no traceback), 1 training that failed numerically.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import inspect
import json
import math
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import pyro
import torch
from tqdm.auto import tqdm

from pyrogen.data.datasets import (
    BINARIZED_MNIST_FILE,
    OLD_FAITHFUL_COLUMNS,
    binarized_mnist,
    mnist,
    old_faithful,
)
from pyrogen.data.loaders import load as load_data
from pyrogen.diagnostics.inference_data import to_inference_data
from pyrogen.diagnostics.plots import image_shape, plot_image_grid
from pyrogen.diagnostics.report import (
    DEFAULT_IW_SAMPLES,
    MODEL_FILE,
    SUMMARY_FILE,
    check_run_folder,
    figure_writer,
    score,
    summarize,
    takes_argument,
    write_run,
)
from pyrogen.infer.engine import FitResult, fit
from pyrogen.io import atomic_write
from pyrogen.models import REGISTRY, VAE, GaussianMixture, GenerativeModel, load
from pyrogen.models.gmm import select_n_components
from pyrogen.models.mixture_em import COVARIANCE_TYPES
from pyrogen.models.vae import LIKELIHOODS, OBJECTIVES
from pyrogen.nn import KINDS as NETWORKS

#: Largest K tried by ``--components auto``.
MAX_AUTO_COMPONENTS = 8
#: Chains of ``--inference nuts``: two, so that R-hat can compare them.
NUTS_CHAINS = 2
#: ``pyrogen sample --out`` formats: tables (rows of numbers) and images.
TABLE_FORMATS = (".csv", ".npy")
IMAGE_FORMATS = (".npy", ".png")
#: Size in inches of the PNG grid of ``pyrogen sample --out FILE.png``.
SAMPLE_FIGURE = (6.0, 6.0)
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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``pyrogen`` command line.

    Args:
        argv: arguments without the program name; default ``sys.argv[1:]``.

    Returns:
        the exit code: 0 on success, 2 for bad input, 1 when training failed numerically.
        (``--help`` exits through ``SystemExit(0)``, as argparse does.)

    Example:
        >>> from pyrogen.cli import main
        >>> main(["fit", "gmm", "--out", "runs/demo", "--quiet"])  # doctest: +SKIP
        0
    """
    import matplotlib

    matplotlib.use("Agg")  # runs write PNG files; never open a window
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except _UsageError as error:
        error.parser.print_usage(sys.stderr)
        print(f"{error.parser.prog}: error: {error.message}", file=sys.stderr)
        return 2
    try:
        return args.run(args)
    except (ValueError, OSError) as error:
        print(f"pyrogen: error: {error}", file=sys.stderr)
        return 2
    except FloatingPointError as error:
        print(f"pyrogen: error: training failed: {error}", file=sys.stderr)
        return 1


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``pyrogen`` (sub-commands fit, sample, evaluate).

    Returns:
        the parser; ``parse_args`` sets ``run``, the function that runs the command.
    """
    parser = _Parser(
        prog="pyrogen",
        description="Generative models as Pyro model/guide pairs: fit, sample, evaluate.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    fit_parser = commands.add_parser(
        "fit",
        help="fit a model family to data and write a run folder",
        description="Fit a model family to data and write a run folder (summary.json, "
        "model.pt, plots; inference_data.nc for the mixture).",
    )
    families = fit_parser.add_subparsers(dest="family", metavar="FAMILY", required=True)
    for name, family in REGISTRY.items():
        command = _FIT_COMMANDS.get(name, _FitCommand())
        doc = (family.__doc__ or name).strip().splitlines()[0]
        family_parser = families.add_parser(name, help=doc, description=doc)
        _add_common_fit_options(family_parser, name, command.data_help)
        command.add_options(family_parser)
        family_parser.set_defaults(run=functools.partial(_run_fit, command=command))

    sample = commands.add_parser(
        "sample",
        help="draw new rows from a fitted model",
        description="Draw new rows from a fitted model. Tabular models: CSV to stdout, or "
        f"--out FILE ({' or '.join(TABLE_FORMATS)}). Image models: --out FILE.npy (an array "
        "(N, *data_shape)) or FILE.png (a grid of the images).",
    )
    sample.add_argument(
        "model_path",
        metavar="RUN_OR_MODEL_FILE",
        type=Path,
        help="a run folder (its model.pt is used) or a model file",
    )
    sample.add_argument(
        "-n",
        "--num-rows",
        type=_positive_int,
        required=True,
        metavar="N",
        help="number of rows (images) to draw",
    )
    sample.add_argument(
        "--out",
        type=Path,
        metavar="FILE",
        help=f"write to this file: {' or '.join(TABLE_FORMATS)} for tabular models, "
        f"{' or '.join(IMAGE_FORMATS)} for image models (required for those)",
    )
    sample.add_argument(
        "--mean",
        action="store_true",
        help="draw the decoder's mean of p(x | z) rather than a sample of x (models with a "
        "decoder, e.g. vae); smoother images",
    )
    sample.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    sample.set_defaults(run=_run_sample)

    evaluate = commands.add_parser(
        "evaluate",
        help="log-likelihood of data under a fitted model",
        description="Print the mean log-likelihood per row (nats) of data under a fitted "
        "model: exact, with BIC/AIC, for the mixture; for the VAE the ELBO, the K-sample "
        "importance-weighted bound and bits per dimension, on the test split of --data-dir "
        "or on every row of --data.",
    )
    evaluate.add_argument(
        "model_path",
        metavar="RUN_OR_MODEL_FILE",
        type=Path,
        help="a run folder (its model.pt is used) or a model file",
    )
    evaluate.add_argument(
        "--data",
        type=Path,
        metavar="PATH",
        help="data file (CSV/TSV, NPY/NPZ or IDX); every row is scored",
    )
    evaluate.add_argument("--columns", metavar="A,B", help="columns of a CSV file to use")
    latent = evaluate.add_argument_group("models without an exact log-likelihood (vae)")
    _add_data_dir_option(latent, "scores the test split")
    latent.add_argument(
        "--dataset",
        choices=DATASETS,
        help="what --data-dir holds; default the run's, else mnist",
    )
    _add_binarize_option(latent, "default the run's (same seed, so the same test images)")
    latent.add_argument(
        "--iw-samples",
        type=_positive_int,
        metavar="K",
        help=f"importance samples of the log-likelihood bound; default the run's, else "
        f"{DEFAULT_IW_SAMPLES}",
    )
    latent.add_argument(
        "--seed",
        type=int,
        help="seed of the Monte Carlo draws and of sampled binarization; default the run's, else 0",
    )
    evaluate.add_argument(
        "--device", choices=("cpu", "cuda"), default="cpu", help="device to score on (default cpu)"
    )
    evaluate.set_defaults(run=_run_evaluate)
    return parser


# --- fit --------------------------------------------------------------------------------
@dataclass
class _Fitted:
    """What a family's fit command hands back to be written (by ``write_run``) and printed."""

    model: GenerativeModel
    result: FitResult
    data: torch.Tensor  # the training rows (N, *data_shape)
    idata: Any = None
    columns: list[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    test_data: torch.Tensor | None = None  # held-out rows (M, *data_shape), scored in the run
    test_labels: torch.Tensor | None = None  # (M,), colours the latent plot
    image_shape: tuple[int, ...] | None = None  # how to draw one example
    iw_samples: int = DEFAULT_IW_SAMPLES


def _no_options(parser: argparse.ArgumentParser) -> None:
    """Families without command-line options of their own."""


def _not_supported(args: argparse.Namespace) -> _Fitted:
    raise ValueError(
        f"family: {args.family!r} cannot be fitted from the command line yet; use "
        "pyrogen.fit from Python"
    )


@dataclass(frozen=True)
class _FitCommand:
    """A family's part of ``pyrogen fit``: its options, how it loads data and fits, and the
    help of the common ``--data`` option (what data it takes)."""

    add_options: Callable[[argparse.ArgumentParser], None] = _no_options
    fit: Callable[[argparse.Namespace], _Fitted] = _not_supported
    data_help: str = "data file (CSV/TSV, NPY/NPZ or IDX)"


def _add_common_fit_options(parser: argparse.ArgumentParser, family: str, data_help: str) -> None:
    data = parser.add_argument_group("data and output")
    data.add_argument("--data", type=Path, metavar="PATH", help=data_help)
    data.add_argument(
        "--columns", metavar="A,B", help="columns of a CSV/TSV --data file to use (comma-separated)"
    )
    data.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help=f"run folder to create; default runs/{family}-YYYYmmdd-HHMMSS",
    )
    data.add_argument(
        "--quiet", action="store_true", help="no progress bars; print only the run folder"
    )
    training = parser.add_argument_group("training")
    training.add_argument(
        "--steps",
        type=_positive_int,
        metavar="N",
        help="optimisation steps (default: the family's)",
    )
    training.add_argument(
        "--device", choices=("cpu", "cuda"), default="cpu", help="device to train on (default cpu)"
    )
    training.add_argument("--seed", type=int, default=0, help="random seed (default 0)")


def _run_fit(args: argparse.Namespace, command: _FitCommand) -> int:
    out = args.out if args.out is not None else _default_run_folder(args.family)
    check_run_folder(out)  # fail before training, not after
    fitted = command.fit(args)
    if fitted.test_data is not None and not args.quiet and sys.stderr.isatty():
        # Scoring many test rows with K importance samples each takes a while: say so.
        print(
            f"scoring {fitted.test_data.shape[0]} test rows (ELBO, and the IWAE bound with "
            f"K = {fitted.iw_samples}) and writing the run folder...",
            file=sys.stderr,
        )
    path = write_run(
        out,
        model=fitted.model,
        result=fitted.result,
        data=fitted.data,
        columns=fitted.columns,
        idata=fitted.idata,
        extra={"seed": args.seed, **fitted.extra},
        test_data=fitted.test_data,
        labels=fitted.test_labels,
        image_shape=fitted.image_shape,
        iw_samples=fitted.iw_samples,
        seed=args.seed,
    )
    if args.quiet:
        print(path)
    else:
        summary = json.loads((path / SUMMARY_FILE).read_text())
        print(_describe_fit(summary, tuple(fitted.data.shape), path))
    return 0


def _default_run_folder(family: str) -> Path:
    return Path("runs") / f"{family}-{datetime.datetime.now():%Y%m%d-%H%M%S}"


def _load_fit_data(
    path: Path | None, columns: str | None
) -> tuple[torch.Tensor, str, list[str] | None]:
    """Rows to fit, a description of where they came from, and their column names."""
    names = _column_names(columns)
    if path is not None:
        return load_data(path, columns=names), str(path), names
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


def _column_names(text: str | None) -> list[str] | None:
    """``--columns a,b`` as a list of names (the loaders check them against the file)."""
    return None if text is None else [name.strip() for name in text.split(",")]


def _progress(args: argparse.Namespace) -> bool | None:
    """No bars when quiet; otherwise the engine's default (only on a terminal)."""
    return False if args.quiet else None


# --- the Gaussian mixture ---------------------------------------------------------------
def _add_gmm_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Gaussian mixture")
    group.add_argument(
        "--components",
        type=_components,
        default="auto",
        metavar="K|auto",
        help=f"number of components, or 'auto' to choose K in 1..{MAX_AUTO_COMPONENTS} "
        "by BIC (default auto)",
    )
    group.add_argument(
        "--covariance",
        choices=COVARIANCE_TYPES,
        default="full",
        help="covariance type (default full)",
    )
    group.add_argument(
        "--inference",
        choices=("map", "variational", "nuts"),
        default="map",
        help="map (point estimates), variational (mean-field posterior) or nuts (MAP, then "
        f"collapsed NUTS with {NUTS_CHAINS} chains); default map",
    )
    group.add_argument(
        "--num-samples",
        type=_positive_int,
        default=500,
        metavar="N",
        help="posterior draws (per chain for nuts; default 500)",
    )
    group.add_argument(
        "--warmup",
        type=_non_negative_int,
        default=500,
        metavar="N",
        help="NUTS warm-up steps per chain (default 500)",
    )


def _fit_gmm(args: argparse.Namespace) -> _Fitted:
    """Choose K (BIC over MAP fits) if asked, fit, and get the posterior as InferenceData."""
    x, source, columns = _load_fit_data(args.data, args.columns)
    fit_options = {"steps": args.steps, "device": args.device, "progress": _progress(args)}
    extra: dict[str, Any] = {"data": source, "inference": args.inference}
    n_components = args.components
    if n_components == "auto":
        candidates = range(1, min(MAX_AUTO_COMPONENTS, x.shape[0]) + 1)
        best, scores = select_n_components(
            x,
            candidates,
            criterion="bic",
            seed=args.seed,
            covariance=args.covariance,
            inference="map",
            **fit_options,
        )
        n_components = best.n_components
        extra["selection"] = {"criterion": "bic", "scores": {str(k): v for k, v in scores.items()}}
    # The chosen K is fitted again, with the same seed, to get its FitResult (a MAP refit
    # reproduces the selected fit exactly); NUTS starts from the MAP point.
    inference = "map" if args.inference == "nuts" else args.inference
    model = GaussianMixture(n_components, args.covariance, inference)
    result = fit(model, x, seed=args.seed, **fit_options)
    if args.inference == "nuts":
        idata = model.mcmc(
            x,
            num_samples=args.num_samples,
            warmup=args.warmup,
            num_chains=NUTS_CHAINS,
            seed=args.seed,
            progress=not args.quiet and sys.stderr.isatty(),
        )
        extra["mcmc"] = {
            "num_chains": NUTS_CHAINS,
            "num_samples": args.num_samples,
            "warmup": args.warmup,
            "divergences": int(idata.sample_stats["diverging"].sum()),
        }
    else:
        idata = to_inference_data(model, x, num_samples=args.num_samples, seed=args.seed)
    return _Fitted(model, result, x, idata=idata, columns=columns, extra=extra)


# --- the variational autoencoder --------------------------------------------------------
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


def _add_vae_options(parser: argparse.ArgumentParser) -> None:
    data = parser.add_argument_group("VAE data")
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
    model = parser.add_argument_group("VAE model")
    model.add_argument(
        "--latent-dim",
        type=_positive_int,
        default=_default_of(VAE, "latent_dim"),
        metavar="L",
        help="dimension of z (default %(default)s); with 2 latent.png shows z itself, "
        "otherwise its first two principal components",
    )
    model.add_argument(
        "--likelihood",
        choices=LIKELIHOODS,
        default=_default_of(VAE, "likelihood"),
        help="p(x | z) (default %(default)s)",
    )
    model.add_argument(
        "--encoder",
        choices=NETWORKS,
        default=_default_of(VAE, "encoder"),
        help="encoder network, mirrored by the decoder (default %(default)s); mlp sees "
        "flattened examples (784,), conv images (C, H, W) such as (1, 28, 28)",
    )
    model.add_argument(
        "--beta",
        type=_positive_float,
        default=_default_of(VAE, "beta"),
        metavar="B",
        help="weight of the KL term, beta-VAE (default %(default)s; reported bounds are at 1)",
    )
    model.add_argument(
        "--objective",
        choices=OBJECTIVES,
        default=_default_of(VAE, "objective"),
        help="training bound: mean_field (ELBO, analytic KL), elbo (Monte Carlo KL) or iwae "
        "(importance weighted, with --particles samples); default %(default)s",
    )
    model.add_argument(
        "--particles",
        type=_positive_int,
        default=_default_of(VAE, "num_particles"),
        metavar="K",
        help="samples per example in the training objective (default %(default)s)",
    )
    training = parser.add_argument_group("VAE training and evaluation")
    training.add_argument(
        "--epochs",
        type=_positive_int,
        metavar="E",
        help=f"passes over the training rows (default {DEFAULT_EPOCHS}; exclusive with --steps)",
    )
    training.add_argument(
        "--batch-size",
        type=_positive_int,
        default=VAE.fit_defaults["batch_size"],
        metavar="B",
        help="rows per step (default %(default)s)",
    )
    training.add_argument(
        "--iw-samples",
        type=_positive_int,
        default=DEFAULT_IW_SAMPLES,
        metavar="K",
        help="importance samples of the test log-likelihood bound (default %(default)s)",
    )


@dataclass(frozen=True)
class _Images:
    """Examples as loaded, (N, *example_shape), before binarization and reshaping."""

    train: torch.Tensor | None  # None when nothing is trained (evaluate)
    test: torch.Tensor
    test_labels: torch.Tensor | None
    description: str  # where they came from and how they were split
    dataset: str | None  # a DATASETS name, or None for a --data file


def _fit_vae(args: argparse.Namespace) -> _Fitted:
    """Load, binarize and shape the data, fit a VAE on the train rows, hold out the test rows."""
    if args.steps is not None and args.epochs is not None:
        raise ValueError(
            f"--steps, --epochs: expected at most one of them, got both ({args.steps}, "
            f"{args.epochs})"
        )
    dataset = _dataset(args.dataset, args.data_dir)
    mode = _binarize_mode(args.binarize, dataset, args.likelihood)  # checked before loading
    images = _load_images(args.data_dir, args.data, args.columns, dataset, args.seed)
    if images.train is None:
        raise ValueError("data: expected training rows, got none")
    source = str(args.data if args.data is not None else args.data_dir)
    _check_values((images.train, images.test), source, mode, args.likelihood)
    train = images.train
    description = images.description
    if args.limit is not None and args.limit < train.shape[0]:
        description += f"; training on its first {args.limit} of {train.shape[0]} rows (--limit)"
        train = train[: args.limit]
    example_shape = tuple(train.shape[1:])
    data_shape = _vae_data_shape(example_shape, args.encoder)
    pyro.set_rng_seed(args.seed)  # the networks' initial weights are drawn here
    model = VAE(
        data_shape,
        latent_dim=args.latent_dim,
        likelihood=args.likelihood,
        encoder=args.encoder,
        decoder=args.encoder,
        beta=args.beta,
        objective=args.objective,
        num_particles=args.particles,
    )
    train = _as_rows(train, data_shape, source)
    test = _as_rows(_binarize(images.test, mode, seed=args.seed), data_shape, source)
    # As the engine counts them: a batch as large as the data is one full-batch step.
    steps_per_epoch = math.ceil(train.shape[0] / min(args.batch_size, train.shape[0]))
    steps = args.steps or steps_per_epoch * (args.epochs or DEFAULT_EPOCHS)
    options = {"batch_size": args.batch_size, "seed": args.seed, "device": args.device}
    if mode == "dynamic":
        result = _fit_resampling_each_epoch(
            model,
            train,
            steps,
            steps_per_epoch,
            quiet=args.quiet,
            binarize_seed=_train_seed(args.seed),
            **options,
        )
    else:
        result = fit(
            model, _binarize(train, mode), steps=steps, progress=_progress(args), **options
        )
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
    }
    return _Fitted(
        model,
        result,
        train,
        extra=extra,
        test_data=test,
        test_labels=images.test_labels,
        image_shape=example_shape if len(example_shape) in (2, 3) else None,
        iw_samples=args.iw_samples,
    )


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
        options: more keywords of :func:`pyrogen.fit` (batch_size, seed, device).

    Returns:
        the last call's FitResult, with ``time_s`` summed over the epochs.
    """
    generator = torch.Generator().manual_seed(binarize_seed)
    show = not quiet and sys.stderr.isatty()
    elapsed, done = 0.0, 0
    with (
        tempfile.TemporaryDirectory(prefix="pyrogen-fit-") as folder,
        tqdm(total=steps, disable=not show, desc=model.family) as bar,
    ):

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
                callbacks=[advance],
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
) -> _Images:
    """The examples of ``--data-dir`` (its train and test splits) or of a ``--data`` file.

    Args:
        split_seed: seed of the random train/test split of a ``--data`` file; None loads
            no training rows (every row of the file is a test row, as ``evaluate`` wants).
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
        return _load_dataset(data_dir, dataset or DATASETS[0], train=split_seed is not None)
    x = load_data(data, columns=_column_names(columns))
    if split_seed is None:
        return _Images(None, x, None, f"{data}, all {x.shape[0]} rows", None)
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
    return _Images(x[order[n_test:]], x[order[:n_test]], None, description, None)


def _load_dataset(root: Path, dataset: str, *, train: bool) -> _Images:
    """MNIST (images and labels) or binarized MNIST (images) from ``root``."""
    try:
        if dataset == "mnist":
            test, labels = mnist(root, "test")
            train_images = mnist(root, "train")[0] if train else None
            description = f"MNIST IDX files in {root}: "
        else:
            test, labels = binarized_mnist(root, "test").reshape(-1, *MNIST_IMAGE), None
            train_images = (
                binarized_mnist(root, "train").reshape(-1, *MNIST_IMAGE) if train else None
            )
            description = (
                f"binarized MNIST (Larochelle & Murray) in {root / BINARIZED_MNIST_FILE}: "
            )
    except FileNotFoundError as error:
        raise ValueError(f"--data-dir: expected the {dataset} files in {root}: {error}") from error
    if train_images is not None:
        description += f"train split ({train_images.shape[0]} rows) for training, "
    return _Images(
        train_images, test, labels, description + f"test split ({test.shape[0]} rows)", dataset
    )


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


#: Each family's part of ``pyrogen fit``; families of the registry missing here get only the
#: common options and a clear error.
_FIT_COMMANDS: dict[str, _FitCommand] = {
    GaussianMixture.family: _FitCommand(
        _add_gmm_options,
        _fit_gmm,
        "data file (CSV/TSV, NPY/NPZ or IDX) of shape (N, D); default the bundled Old "
        "Faithful data",
    ),
    VAE.family: _FitCommand(
        _add_vae_options,
        _fit_vae,
        "an NPY/NPZ array (N, *shape) with values in [0, 1] (CSV/TSV also read), split at "
        f"random (seeded) into {1 - TEST_FRACTION:.0%}% training and {TEST_FRACTION:.0%}% test "
        "rows; one of --data and --data-dir is required",
    ),
}


# --- sample and evaluate ----------------------------------------------------------------
def _run_sample(args: argparse.Namespace) -> int:
    model, run = _load_model(args.model_path)
    shape = _drawable(model, run)
    formats = IMAGE_FORMATS if shape is not None else TABLE_FORMATS
    kind = "an image model" if shape is not None else f"a tabular model ({model.family})"
    suffix = None if args.out is None else args.out.suffix.lower()
    if (args.out is None and shape is not None) or (suffix is not None and suffix not in formats):
        got = (
            "no --out (CSV on stdout is for tabular models)"
            if suffix is None
            else repr(str(args.out))
        )
        raise ValueError(
            f"--out: expected a file ending in {' or '.join(formats)} for {kind}, got {got}"
        )
    options = {}
    if args.mean:
        if not takes_argument(model.sample, "mean"):
            raise ValueError(
                f"--mean: expected a model with a decoder (e.g. vae), got {model.family}"
            )
        options["mean"] = True
    pyro.set_rng_seed(args.seed)
    with torch.no_grad():
        rows = model.sample(args.num_rows, **options).detach().cpu()
    if suffix == ".png":
        figure_writer(lambda ax: plot_image_grid(rows, ax, shape=shape), SAMPLE_FIGURE)(args.out)
        return 0
    if suffix == ".npy":
        with atomic_write(args.out) as handle:
            np.save(handle, rows.numpy())
        return 0
    table = rows.numpy().reshape(rows.shape[0], -1)
    columns = run.get("columns")
    if columns is None or len(columns) != table.shape[1]:
        columns = [f"x{i}" for i in range(table.shape[1])]
    if args.out is None:
        _write_csv(sys.stdout, table, columns)
    else:
        with atomic_write(args.out, "w") as handle:
            _write_csv(handle, table, columns)
    return 0


def _drawable(model: GenerativeModel, run: dict[str, Any]) -> tuple[int, ...] | None:
    """How to draw one example of an image model (from its run, else its data_shape)."""
    if run.get("image_shape"):
        return tuple(run["image_shape"])
    data_shape = getattr(model, "data_shape", None)
    return None if data_shape is None else image_shape(data_shape)


def _write_csv(handle: Any, table: np.ndarray, columns: list[str]) -> None:
    # A header row, so `pyrogen evaluate --data` and pyrogen.data.load read the file back.
    np.savetxt(handle, table, delimiter=",", header=",".join(columns), comments="", fmt="%.8g")


def _run_evaluate(args: argparse.Namespace) -> int:
    model, run = _load_model(args.model_path)
    device = _device(args.device)
    model.to(device)
    if hasattr(model, "log_prob"):
        return _evaluate_exact(args, model, run, device)
    if hasattr(model, "elbo") and hasattr(model, "log_likelihood"):
        return _evaluate_bounds(args, model, run)
    raise ValueError(
        f"{args.model_path}: family {model.family!r} has no log-likelihood to evaluate"
    )


def _evaluate_exact(
    args: argparse.Namespace, model: GenerativeModel, run: dict[str, Any], device: torch.device
) -> int:
    """The exact log-likelihood per row, BIC and AIC of ``--data`` (the mixture)."""
    for option in ("data_dir", "dataset", "binarize", "iw_samples", "seed"):
        if getattr(args, option) is not None:
            flag = "--" + option.replace("_", "-")
            raise ValueError(
                f"{flag}: expected no value for a {model.family} model (its log-likelihood is "
                f"exact; give its data with --data), got {getattr(args, option)!r}"
            )
    if args.data is None:
        raise ValueError(
            f"--data: expected a data file to score the {model.family} model on, got none"
        )
    x = load_data(args.data, columns=_column_names(args.columns)).to(device)
    summary = summarize(model, x)
    if "inference" in run:
        summary["inference"] = run["inference"]
    lines = [
        f"model           {args.model_path} ({_describe_model(summary)})",
        f"data            {args.data}: {_describe_shape(tuple(x.shape))}",
        *_fit_statistics(summary),
    ]
    print("\n".join(lines))
    return 0


def _evaluate_bounds(args: argparse.Namespace, model: GenerativeModel, run: dict[str, Any]) -> int:
    """The ELBO, the K-sample bound and bits/dim of the test split of --data-dir, or of --data.

    Defaults come from the run, so evaluating a run on its own data reproduces its numbers.
    """
    seed = args.seed if args.seed is not None else run.get("seed", 0)
    dataset = _dataset(args.dataset, args.data_dir, default=run.get("dataset"))
    requested = args.binarize
    if requested is None and dataset != "binarized-mnist":
        requested = run.get("preprocessing", {}).get("binarize")
    likelihood = getattr(model, "likelihood", "gaussian")
    mode = _binarize_mode(requested, dataset, likelihood)
    images = _load_images(args.data_dir, args.data, args.columns, dataset, split_seed=None)
    source = str(args.data if args.data is not None else args.data_dir)
    _check_values((images.test,), source, mode, likelihood)
    x = _as_rows(_binarize(images.test, mode, seed=seed), model.data_shape, source)
    iw_samples = args.iw_samples or run.get("test", {}).get("iw_samples") or DEFAULT_IW_SAMPLES
    stats = score(model, x, iw_samples=iw_samples, seed=seed)
    how = _BINARIZATIONS[mode].format(seed=seed, train_seed=_train_seed(seed))
    if mode == "none" and likelihood == "bernoulli" and not _is_binary(x):
        how += _GREY_UNDER_BERNOULLI
    lines = [
        f"model           {args.model_path} "
        f"({_describe_model({'family': model.family, 'config': model.config})})",
        f"data            {images.description}, scored as examples of shape {tuple(x.shape[1:])}",
        f"preprocessing   --binarize {mode}: {how}",
        *_score_lines(stats, prefix=""),
    ]
    print("\n".join(lines))
    return 0


def _device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device: expected an available device, got {name!r} (no CUDA)")
    return torch.device(name)


def _load_model(path: Path) -> tuple[GenerativeModel, dict[str, Any]]:
    """A model file, or a run folder's model.pt; with the run's summary (empty for a file)."""
    if not path.is_dir():
        return load(path), {}
    model_file = path / MODEL_FILE
    if not model_file.is_file():
        raise FileNotFoundError(f"{path}: expected a run folder holding {MODEL_FILE}, found none")
    summary_file = path / SUMMARY_FILE
    run = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
    return load(model_file), run


# --- printing ---------------------------------------------------------------------------
def _describe_fit(summary: dict[str, Any], shape: tuple[int, ...], path: Path) -> str:
    """The human summary of a fit: data, model, fit statistics, parameters, run folder."""
    test = summary.get("test")
    if test is None:
        data = f"{summary.get('data', '?')}: {_describe_shape(shape)}"
        if summary.get("columns"):
            data += f" ({', '.join(summary['columns'])})"
        lines = [f"data            {data}"]
    else:
        lines = [
            f"data            {summary.get('data', '?')}",
            f"shapes          train {shape[0]} rows, test {test['n_rows']} rows of shape "
            f"{tuple(shape[1:])}"
            + (
                f"; latent z ({summary['config']['latent_dim']},)"
                if "latent_dim" in summary.get("config", {})
                else ""
            ),
        ]
    preprocessing = summary.get("preprocessing")
    if preprocessing:
        lines.append(
            f"preprocessing   --binarize {preprocessing['binarize']}: "
            f"{preprocessing['description']}"
        )
    lines.append(f"model           {_describe_model(summary)}")
    training = summary.get("training")
    if training and "epochs" in summary:
        lines.append(
            f"training        {summary['epochs']:g} epoch(s): {training['steps']} steps of up to "
            f"{summary['batch_size']} rows, {training['time_s']:.1f} s on {training['device']}"
        )
    selection = summary.get("selection")
    if "n_components" in summary:
        how = f" (chosen by {selection['criterion'].upper()})" if selection else ""
        lines.append(f"components      {summary['n_components']}{how}")
    if selection:
        chosen = str(summary["n_components"])
        for k, score_ in selection["scores"].items():
            mark = "  <- chosen" if k == chosen else ""
            lines.append(f"  K={k:<3} {selection['criterion'].upper()} {score_:12.2f}{mark}")
    lines.extend(_fit_statistics(summary))
    if test is not None:
        lines.extend(_score_lines(test, prefix="test "))
    if "mcmc" in summary:
        mcmc = summary["mcmc"]
        lines.append(
            f"NUTS            {mcmc['num_chains']} chains x {mcmc['num_samples']} draws "
            f"({mcmc['warmup']} warm-up), {mcmc['divergences']} divergences"
        )
    if "weights" in summary and "means" in summary:
        lines.append("")
        lines.extend(_parameter_table(summary["weights"], summary["means"], summary.get("columns")))
    lines.append("")
    lines.append(f"run folder      {path}")
    return "\n".join(lines)


def _fit_statistics(summary: dict[str, Any]) -> list[str]:
    """Log-likelihood per row and the information criteria, where the model has them."""
    lines = []
    if "log_likelihood_per_row" in summary:
        lines.append(
            f"log-likelihood  {summary['log_likelihood_per_row']:.4f} nats per row "
            "(exact, at the point estimates, mean over rows)"
        )
    for criterion in ("bic", "aic"):
        if criterion in summary:
            lines.append(f"{criterion.upper():<15} {summary[criterion]:.2f}")
    return lines


def _score_lines(stats: dict[str, Any], prefix: str) -> list[str]:
    """The numbers of :func:`~pyrogen.diagnostics.score`, each with the bound it is."""
    lines = []
    if "elbo_per_example" in stats:
        lines.append(
            f"{prefix}ELBO".ljust(16)
            + f"{stats['elbo_per_example']:.4f} nats per example (a lower bound on log p(x))"
        )
    bound = f"IWAE bound, K = {stats['iw_samples']}" if "iw_samples" in stats else "exact"
    lines.append(
        f"{prefix}log p(x)".ljust(16)
        + f"{stats['log_likelihood_per_example']:.4f} nats per example ({bound})"
    )
    if "bits_per_dim" in stats:
        lines.append(
            f"{prefix}bits/dim".ljust(16) + f"{stats['bits_per_dim']:.4f} (from the {bound})"
        )
    return lines


def _describe_model(summary: dict[str, Any]) -> str:
    config = summary.get("config", {})
    details = [f"{config['covariance']} covariance"] if "covariance" in config else []
    for key in ("encoder", "likelihood", "objective"):
        if key in config:
            details.append(f"{config[key]} {key}")
    if config.get("beta", 1) != 1:
        details.append(f"beta {config['beta']:g}")
    if config.get("num_particles", 1) > 1:
        details.append(f"{config['num_particles']} particles")
    # A run's own record of its inference wins: a NUTS run's model is configured as MAP.
    inference = summary.get("inference", config.get("inference"))
    if inference is not None:
        details.append(f"{inference} inference")
    return ", ".join([summary["family"], *details])


def _describe_shape(shape: tuple[int, ...]) -> str:
    if len(shape) == 2:
        return f"{shape[0]} rows x {shape[1]} columns"
    return f"{shape[0]} rows of shape {tuple(shape[1:])}"


def _parameter_table(
    weights: list[float], means: list[list[float]], columns: list[str] | None
) -> list[str]:
    """Weights and means, one row per component, as aligned text."""
    n_features = len(means[0])
    names = (
        columns if columns and len(columns) == n_features else [f"x{i}" for i in range(n_features)]
    )
    header = ["component", "weight", *[f"mean {name}" for name in names]]
    rows = [
        [str(k), f"{weight:.4f}", *[f"{value:.4g}" for value in mean]]
        for k, (weight, mean) in enumerate(zip(weights, means, strict=True))
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return [
        "  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True))
        for row in [header, *rows]
    ]


# --- argument parsing helpers -----------------------------------------------------------
class _UsageError(Exception):
    def __init__(self, parser: argparse.ArgumentParser, message: str) -> None:
        super().__init__(message)
        self.parser = parser
        self.message = message


class _Parser(argparse.ArgumentParser):
    """Raises usage errors instead of exiting, so :func:`main` returns their exit code."""

    def error(self, message: str) -> NoReturn:
        raise _UsageError(self, message)


def _positive_int(text: str) -> int:
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _non_negative_int(text: str) -> int:
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _default_of(function: Callable[..., Any], name: str) -> Any:
    """The default of argument ``name`` of ``function``: option defaults follow the API's."""
    return inspect.signature(function).parameters[name].default


def _components(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return _positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected a positive integer or 'auto', got {text!r}"
        ) from None


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
