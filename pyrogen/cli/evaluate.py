"""``pyrogen evaluate``: score data under a fitted model, exactly or by the VAE's bounds."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from pyrogen.cli.common import (
    _column_names,
    _describe_model,
    _describe_shape,
    _device,
    _fit_statistics,
    _load_model,
    _positive_int,
    _score_lines,
)
from pyrogen.cli.vae import (
    _BINARIZATIONS,
    _GREY_UNDER_BERNOULLI,
    DATASETS,
    _add_binarize_option,
    _add_data_dir_option,
    _as_rows,
    _binarize,
    _binarize_mode,
    _check_values,
    _dataset,
    _is_binary,
    _load_images,
    _train_seed,
)
from pyrogen.data.loaders import load as load_data
from pyrogen.diagnostics.report import DEFAULT_IW_SAMPLES, score, summarize
from pyrogen.models import GenerativeModel


def _add_evaluate_command(commands: argparse._SubParsersAction) -> None:
    """The ``evaluate`` sub-command, added to ``commands``."""
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
