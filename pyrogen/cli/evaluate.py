"""``pyrogen evaluate``: score data under a fitted model, exactly or by the VAEs' bounds
(with the accuracy of a classifier or of clusters where the data have labels)."""

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
from pyrogen.cli.labels import _add_labels_options, _check_classes
from pyrogen.cli.vae import (
    DATASETS,
    _add_binarize_option,
    _add_data_dir_option,
    _images_for,
)
from pyrogen.data.loaders import load as load_data
from pyrogen.diagnostics.report import (
    DEFAULT_IW_SAMPLES,
    conditions_on_labels,
    likelihood_target,
    score,
    summarize,
)
from pyrogen.models import GenerativeModel


def _add_evaluate_command(commands: argparse._SubParsersAction) -> None:
    """The ``evaluate`` sub-command, added to ``commands``."""
    evaluate = commands.add_parser(
        "evaluate",
        help="log-likelihood of data under a fitted model",
        description="Print the mean log-likelihood per row (nats) of data under a fitted "
        "model: exact, with BIC/AIC, for the mixture; for the VAEs the ELBO, the K-sample "
        "importance-weighted bound and bits per dimension, on the test split of --data-dir "
        "or on every row of --data. A cvae is scored on what it models: log p(x | y) with "
        "labels (the data's), log p(x_missing | x_given[, y]) with given values. Where the "
        "data have labels, also the accuracy of an ssvae's classifier and the clustering "
        "accuracy of a gmvae.",
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
    latent = evaluate.add_argument_group(
        "models without an exact log-likelihood (vae, cvae, ssvae, gmvae)"
    )
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
        "--step-samples",
        type=_positive_int,
        metavar="K",
        help="diffusion models: draws of the diffusion step per example in the ELBO's "
        "diffusion term; default the run's, else 1",
    )
    _add_labels_options(
        latent,
        "the condition y of a cvae with labels (required), or scores an ssvae's classifier "
        "or a gmvae's clusters",
        num_classes=False,
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
    if model.exact_likelihood:
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
    for option in (
        "data_dir",
        "dataset",
        "binarize",
        "iw_samples",
        "step_samples",
        "labels",
        "seed",
    ):
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
    """The ELBO, the K-sample bound and bits/dim of the test split of --data-dir, or of --data;
    with labels, the accuracy of a classifier's or a clustering model's ``predict``.

    Defaults come from the run, so evaluating a run on its own data reproduces its numbers.
    """
    seed = args.seed if args.seed is not None else run.get("seed", 0)
    uses_labels = conditions_on_labels(model) or hasattr(model, "predict")
    if args.labels is not None and not uses_labels:
        raise ValueError(
            f"--labels: expected none for a {model.family} model (it uses no labels), "
            f"got {args.labels!r}"
        )
    examples = _images_for(args, model, run)
    labels = _labels_for(model, examples.labels, examples.labels_source)
    if hasattr(model, "elbo_terms"):  # a diffusion model: step draws, not importance samples
        if args.iw_samples is not None:
            raise ValueError(
                f"--iw-samples: expected none for a {model.family} model (its ELBO's "
                "diffusion term is estimated with --step-samples), got {args.iw_samples}"
            )
        samples = args.step_samples or run.get("test", {}).get("step_samples") or 1
    else:
        if args.step_samples is not None:
            raise ValueError(
                f"--step-samples: expected none for a {model.family} model (it has no "
                f"diffusion steps), got {args.step_samples}"
            )
        samples = args.iw_samples or run.get("test", {}).get("iw_samples") or DEFAULT_IW_SAMPLES
    stats = score(model, examples.x, labels=labels, iw_samples=samples, seed=seed)
    lines = [
        f"model           {args.model_path} "
        f"({_describe_model({'family': model.family, 'config': model.config})})",
        f"data            {examples.description}, scored as examples of shape "
        f"{tuple(examples.x.shape[1:])}",
        f"preprocessing   --binarize {examples.binarize}: {examples.preprocessing}",
    ]
    if labels is not None:
        use = "the condition y" if conditions_on_labels(model) else "scoring predict"
        lines.append(f"labels          {examples.labels_source} ({use})")
    lines.extend(_score_lines(stats, prefix=""))
    print("\n".join(lines))
    return 0


def _labels_for(
    model: GenerativeModel,
    labels: torch.Tensor | None,
    source: str | None,
) -> torch.Tensor | None:
    """The data's labels where the model uses them, checked against its classes."""
    conditioned = conditions_on_labels(model)
    if conditioned and labels is None:
        raise ValueError(
            f"--labels: expected the labels of the data for a {model.family} conditioned on "
            f"{model.num_classes} classes (it is scored on {likelihood_target(model)}; "
            "MNIST --data-dir has them, with --data give --labels FILE|KEY), got none"
        )
    if labels is None or not (conditioned or hasattr(model, "predict")):
        return None
    classes = getattr(model, "num_classes", None)
    if classes is not None:
        return _check_classes(labels, classes, source, unlabelled=not conditioned)
    return labels
