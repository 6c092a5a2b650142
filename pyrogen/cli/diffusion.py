"""``pyrogen fit diffusion``: a diffusion model (a hierarchical VAE) on images or a table,
optionally class-conditional; data loading and splitting are the VAEs' (``vae.py``)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pyro

from pyrogen.cli.common import (
    _column_names,
    _FitCommand,
    _Fitted,
    _hardware,
    _load_model,
    _positive_float,
    _positive_int,
)
from pyrogen.cli.flow import _widths
from pyrogen.cli.labels import _add_labels_options, _check_classes, _num_classes
from pyrogen.cli.vae import (
    _BINARIZATIONS,
    DEFAULT_EPOCHS,
    _add_image_data_options,
    _as_rows,
    _binarize,
    _binarize_mode,
    _check_values,
    _dataset,
    _fit_binarized,
    _load_images,
    _steps_per_epoch,
    _train_seed,
)
from pyrogen.data.validation import check_choice
from pyrogen.models.diffusion import LIKELIHOODS, OBJECTIVES, PREDICTIONS, DiffusionVAE
from pyrogen.nn.schedules import SCHEDULES

#: Help of ``--data`` for the diffusion model.
DIFFUSION_DATA_HELP = (
    "a table (CSV/TSV) or an NPY/NPZ array (N, *shape), split at random (seeded) into 90% "
    "training and 10% test rows; one of --data and --data-dir is required"
)


def _add_diffusion_options(parser: argparse.ArgumentParser) -> None:
    _add_image_data_options(parser, "DiffusionVAE")
    model = parser.add_argument_group("DiffusionVAE model")
    model.add_argument(
        "--timesteps",
        type=_positive_int,
        default=1000,
        metavar="T",
        help="diffusion steps (default 1000)",
    )
    model.add_argument(
        "--schedule",
        choices=SCHEDULES,
        default="linear",
        help="noise schedule (default linear: linear in log-SNR, VDM's)",
    )
    model.add_argument(
        "--prediction",
        choices=PREDICTIONS,
        default="eps",
        help="what the denoiser predicts (default eps)",
    )
    model.add_argument(
        "--likelihood",
        choices=LIKELIHOODS,
        help="p(x | z_0): discretized (8-bit levels; default for --data-dir mnist), bernoulli "
        "(0/1 data; default for binarized-mnist and with --binarize), gaussian (real "
        "values; default for a --data file)",
    )
    model.add_argument(
        "--objective",
        choices=OBJECTIVES,
        default="elbo",
        help="training loss: elbo (sampled steps, unbiased), full (every step; small T), "
        "simple (DDPM's eps loss, not a bound); default elbo",
    )
    model.add_argument(
        "--denoiser", choices=("mlp", "unet"), help="default unet for images, mlp for tables"
    )
    model.add_argument(
        "--hidden",
        type=_widths,
        default=(256, 256, 256),
        metavar="W,W",
        help="MLP widths (default 256,256,256)",
    )
    model.add_argument(
        "--channels",
        type=_positive_int,
        default=32,
        metavar="C",
        help="UNet base channels (default 32)",
    )
    model.add_argument(
        "--autoencoder",
        type=Path,
        metavar="RUN",
        help="latent diffusion: model the codes of this trained VAE (a `pyrogen fit vae` run "
        "folder or model file), kept frozen; samples are decoded by it",
    )
    conditions = parser.add_argument_group("DiffusionVAE classes (classifier-free guidance)")
    conditions.add_argument(
        "--conditional",
        action="store_true",
        help="condition on the data's labels (MNIST --data-dir has them; with --data give "
        "--labels), dropping a share of them in training so that guidance works",
    )
    conditions.add_argument(
        "--label-dropout",
        type=float,
        default=0.1,
        metavar="P",
        help="share of training labels replaced by the null label (default 0.1)",
    )
    _add_labels_options(conditions, "the model is conditioned on them (with --conditional)")
    training = parser.add_argument_group("DiffusionVAE training and evaluation")
    training.add_argument(
        "--epochs",
        type=_positive_int,
        metavar="E",
        help=f"passes over the training rows (default {DEFAULT_EPOCHS})",
    )
    training.add_argument(
        "--batch-size",
        type=_positive_int,
        default=128,
        metavar="B",
        help="rows per step (default 128)",
    )
    training.add_argument(
        "--lr",
        type=_positive_float,
        default=1e-3,
        metavar="LR",
        help="learning rate (default 1e-3)",
    )
    training.add_argument(
        "--step-samples",
        type=_positive_int,
        default=1,
        metavar="K",
        help="draws of the diffusion step per test example in the reported ELBO (default 1)",
    )


def _fit_diffusion(args: argparse.Namespace) -> _Fitted:
    if args.steps is not None and args.epochs is not None:
        raise ValueError(
            "--steps, --epochs: expected at most one of them, got both "
            f"({args.steps}, {args.epochs})"
        )
    dataset = _dataset(args.dataset, args.data_dir)
    autoencoder = None
    if args.autoencoder is not None:
        autoencoder, _ = _load_model(args.autoencoder)
        if args.likelihood not in (None, "gaussian"):
            raise ValueError(
                f"--likelihood: the codes of --autoencoder are real vectors, expected gaussian, "
                f"got {args.likelihood}"
            )
    likelihood = args.likelihood or (
        "gaussian" if autoencoder else _default_likelihood(dataset, args.binarize)
    )
    check_choice("--likelihood", likelihood, LIKELIHOODS)
    mode = _binarize_mode(args.binarize, dataset, likelihood)
    if mode != "none" and likelihood != "bernoulli" and autoencoder is None:
        raise ValueError(
            f"--binarize: {mode} gives 0/1 data, for --likelihood bernoulli; got {likelihood}"
        )
    images = _load_images(
        args.data_dir, args.data, args.columns, dataset, args.seed, labels=args.labels
    )
    source = str(args.data if args.data is not None else args.data_dir)
    _check_values((images.train, images.test), source, mode, likelihood)
    train, train_labels, description = images.train, images.train_labels, images.description
    if args.limit is not None and args.limit < train.shape[0]:
        description += f"; training on its first {args.limit} of {train.shape[0]} rows (--limit)"
        train = train[: args.limit]
        train_labels = None if train_labels is None else train_labels[: args.limit]
    options, test_labels, extra = {}, None, {}
    if args.conditional:
        if train_labels is None:
            raise ValueError(
                "--conditional: expected labels in the data (MNIST --data-dir has them; with "
                "--data give --labels FILE|KEY), got none"
            )
        classes = _num_classes(
            args.num_classes, [train_labels, images.test_labels], images.labels_source
        )
        train_labels = _check_classes(train_labels, classes, images.labels_source)
        if images.test_labels is not None:
            test_labels = _check_classes(images.test_labels, classes, images.labels_source)
        options = {"num_classes": classes, "label_dropout": args.label_dropout}
        extra["labels"] = f"{images.labels_source}: the condition y, classes 0..{classes - 1}"
    else:
        train_labels = None
    example_shape = tuple(train.shape[1:])
    if autoencoder is not None:  # the VAE's own example shape (flat for an mlp encoder)
        example_shape = tuple(autoencoder.data_shape)
        options["autoencoder"] = autoencoder
        extra["autoencoder"] = str(args.autoencoder)
    pyro.set_rng_seed(args.seed)  # the networks' initial weights are drawn here
    model = DiffusionVAE(
        example_shape,
        args.timesteps,
        args.schedule,
        args.denoiser,
        args.prediction,
        likelihood,
        objective=args.objective,
        hidden=args.hidden,
        channels=args.channels,
        **options,
    )
    train = _as_rows(train, example_shape, source)
    test = _as_rows(_binarize(images.test, mode, seed=args.seed), example_shape, source)
    steps_per_epoch = _steps_per_epoch(model, train.shape[0], args.batch_size, train_labels)
    steps = args.steps or steps_per_epoch * (args.epochs or DEFAULT_EPOCHS)
    fit_options = {
        "y": train_labels,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "seed": args.seed,
        **_hardware(args),
    }
    result = _fit_binarized(model, train, mode, steps, steps_per_epoch, args, **fit_options)
    extra |= {
        "data": description,
        "dataset": images.dataset,
        "preprocessing": {
            "binarize": mode,
            "description": _BINARIZATIONS[mode].format(
                seed=args.seed, train_seed=_train_seed(args.seed)
            ),
        },
        "limit": args.limit,
        "epochs": result.steps / steps_per_epoch,
        "batch_size": min(args.batch_size, train.shape[0]),
    }
    return _Fitted(
        model,
        result,
        train,
        columns=_column_names(args.columns),
        extra=extra,
        test_data=test,
        test_labels=test_labels,
        image_shape=tuple(images.train.shape[1:]) if images.train.dim() in (3, 4) else None,
        iw_samples=args.step_samples,
    )


def _default_likelihood(dataset: str | None, binarize: str | None) -> str:
    if dataset == "binarized-mnist" or binarize not in (None, "none"):
        return "bernoulli"
    return "discretized" if dataset == "mnist" else "gaussian"


#: The diffusion model's part of ``pyrogen fit`` (its entry in ``pyrogen.cli._FIT_COMMANDS``).
FIT_COMMAND = _FitCommand(_add_diffusion_options, _fit_diffusion, DIFFUSION_DATA_HELP)
