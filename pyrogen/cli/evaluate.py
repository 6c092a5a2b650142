"""``pyrogen evaluate``: score data under a fitted model, exactly or by its bounds (with the
accuracy of a classifier or of clusters where the data have labels), through the model
contract and :func:`pyrogen.diagnostics.score`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from pyrogen import data
from pyrogen.cli import options as opt
from pyrogen.diagnostics import score, summarize
from pyrogen.diagnostics.text import describe_evaluation, describe_shape
from pyrogen.models import GenerativeModel

#: Options of the models that report bounds (refused for an exact log-likelihood).
_BOUND_OPTIONS = ("data_dir", "dataset", "binarize", "iw_samples", "step_samples", "labels")


def add_evaluate_command(commands: argparse._SubParsersAction) -> None:
    """The ``evaluate`` sub-command, added to ``commands``."""
    evaluate = commands.add_parser(
        "evaluate",
        help="log-likelihood of data under a fitted model",
        description="Print the mean log-likelihood per row (nats) of data under a fitted "
        "model (what it models: log p(x), or log p(x | y) ...), exact with BIC/AIC or its "
        "bounds and bits per dimension, on the test split of --data-dir or on every row of "
        "--data; where the data have labels, also the accuracy of a classifier or clusters.",
    )
    opt.add_run_options(
        evaluate, "seed of the Monte Carlo draws and of sampled binarization; default the run's"
    )
    opt.add_all(
        evaluate,
        ("--data", "data file (CSV/TSV, NPY/NPZ or IDX); every row is scored", {"type": Path}),
        ("--columns", "columns of a CSV file to use", {"metavar": "A,B"}),
    )
    latent = evaluate.add_argument_group("models without an exact log-likelihood")
    opt.add_image_options(latent, "scores the test split", "Default the run's (the same images).")
    opt.add_all(
        latent,
        ("--iw-samples", "importance samples of the log-likelihood bound; default the run's, "
         "else the family's", {"type": opt.positive_int, "metavar": "K"}),
        ("--step-samples", "diffusion models: draws of the diffusion step per example in the "
         "ELBO's diffusion term; default the run's, else 1", {"type": opt.positive_int}),
    )  # fmt: skip
    opt.add_labels_options(
        latent,
        "the condition y of a cvae with labels (required), or scores an ssvae's classifier "
        "or a gmvae's clusters",
        num_classes=False,
    )
    opt.add_scale_out_options(
        evaluate,
        "processes that score the rows, each its share; the "
        "bounds' draws of process r seeded with --seed + r (default 1)",
    )
    evaluate.set_defaults(run=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> int:
    """Score the data and print the numbers (the first process, with several)."""
    model, run, device = opt.load_run(args)
    model.to(device)
    scale_out = {"devices": args.devices, "num_nodes": args.num_nodes, "device": device}
    evaluate = _evaluate_exact if model.exact_likelihood else _evaluate_bounds
    text = evaluate(args, model, run, scale_out)
    if opt.is_main_process(args):
        print(text)
    return 0


def _evaluate_exact(
    args: argparse.Namespace, model: GenerativeModel, run: dict[str, Any], scale_out: dict
) -> str:
    """The exact log-likelihood per row, BIC and AIC of ``--data`` (the mixture)."""
    for option in (*_BOUND_OPTIONS, "seed"):
        if getattr(args, option) is not None:
            raise ValueError(
                f"--{option.replace('_', '-')}: expected no value for a {model.family} model "
                f"(its log-likelihood is exact; give its data with --data), got "
                f"{getattr(args, option)!r}"
            )
    if args.data is None:
        raise ValueError(
            f"--data: expected a data file to score the {model.family} model on, got none"
        )
    columns = None if args.columns is None else args.columns.split(",")
    x = data.load(args.data, columns=columns).to(model.device)
    summary = summarize(model, x, **scale_out)
    if "inference" in run:
        summary["inference"] = run["inference"]
    return describe_evaluation(args.model_path, summary, f"{args.data}: {describe_shape(x.shape)}")


def _evaluate_bounds(
    args: argparse.Namespace, model: GenerativeModel, run: dict[str, Any], scale_out: dict
) -> str:
    """The ELBO, the tighter bound and bits/dim of the test split of --data-dir, or of
    --data; with labels, the accuracy of a classifier's or a clustering model's predict.
    Defaults come from the run, so evaluating a run on its own data reproduces its numbers."""
    seed = args.seed if args.seed is not None else run.get("seed", 0)
    uses_labels = model.conditions_on_labels or model.predicts is not None
    if args.labels is not None and not uses_labels:
        raise ValueError(
            f"--labels: expected none for a {model.family} model (it uses no labels), "
            f"got {args.labels!r}"
        )
    examples = opt.images_for(args, model, run)
    labels = _labels_for(model, examples.labels, examples.labels_source)
    name = model.score_samples_name
    other = "step_samples" if name == "iw_samples" else "iw_samples"
    if getattr(args, other) is not None:
        raise ValueError(
            f"--{other.replace('_', '-')}: expected none for a {model.family} model (its "
            f"bounds are estimated with --{name.replace('_', '-')}), got {getattr(args, other)}"
        )
    samples = getattr(args, name) or run.get("test", {}).get(name) or model.default_score_samples
    stats = score(model, examples.x, labels=labels, iw_samples=samples, seed=seed, **scale_out)
    use = "the condition y" if model.conditions_on_labels else "scoring predict"
    return describe_evaluation(
        args.model_path, {"family": model.family, "config": model.config},
        f"{examples.description}, scored as examples of shape {tuple(examples.x.shape[1:])}",
        stats, preprocessing=f"--binarize {examples.binarize}: {examples.preprocessing}",
        labels=None if labels is None else f"{examples.labels_source} ({use})",
    )  # fmt: skip


def _labels_for(
    model: GenerativeModel, labels: torch.Tensor | None, source: str | None
) -> torch.Tensor | None:
    """The data's labels where the model uses them, checked against its classes."""
    conditioned = model.conditions_on_labels
    if conditioned and labels is None:
        raise ValueError(
            f"--labels: expected the labels of the data for a {model.family} conditioned on "
            f"{model.label_count} classes (it is scored on {model.likelihood_target}; "
            "MNIST --data-dir has them, with --data give --labels FILE|KEY), got none"
        )
    if labels is None or not (conditioned or model.predicts is not None):
        return None
    if model.predicts == "class" or conditioned:
        return data.check_classes(labels, model.label_count, source, unlabelled=not conditioned)
    return labels
