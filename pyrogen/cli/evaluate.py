"""``pyrogen evaluate``: score data under a fitted model, exactly or by the VAEs' bounds
(with the accuracy of a classifier or of clusters where the data have labels)."""

from __future__ import annotations

import argparse
import copy
import math
from pathlib import Path
from typing import Any

import pyro
import torch

from pyrogen.cli.common import (
    _add_scale_out_options,
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
from pyrogen.cli.sample import _is_main_process
from pyrogen.cli.vae import (
    DATASETS,
    _add_binarize_option,
    _add_data_dir_option,
    _images_for,
)
from pyrogen.data.loaders import load as load_data
from pyrogen.diagnostics.metrics import clustering_accuracy
from pyrogen.diagnostics.report import (
    DEFAULT_IW_SAMPLES,
    DIFFUSION_TERMS,
    conditions_on_labels,
    given_mask,
    likelihood_target,
    score,
    summarize,
)
from pyrogen.infer import distributed
from pyrogen.infer.distributed import (
    all_gather_objects,
    cluster,
    join,
    process_device,
    shard,
    spawn,
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
    _add_scale_out_options(
        evaluate,
        "processes that score the rows, each its share (one per GPU with --device cuda): an "
        "exact log-likelihood is the same up to float rounding, while process r draws the "
        "Monte Carlo samples of the bounds seeded with --seed + r, so those differ from one "
        "process's by Monte Carlo error (default 1)",
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
    if _sharded(args):
        summary = _sharded_summary(args, model, x, device)
        if not _is_main_process(args):
            return 0
    else:
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
    if _sharded(args):
        device = _device(args.device)
        stats = _sharded_score(args, model, examples.x, labels, samples, seed, device)
        if not _is_main_process(args):
            return 0
    else:
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


# --- evaluate --devices N ----------------------------------------------------------------
def _sharded(args: argparse.Namespace) -> bool:
    """Whether the rows are scored in several processes (--devices, --num-nodes)."""
    return args.devices * args.num_nodes > 1


def _sharded_summary(
    args: argparse.Namespace, model: GenerativeModel, x: torch.Tensor, device: torch.device
) -> dict[str, Any]:
    """What :func:`_fit_statistics` prints of ``summarize(model, x)``, with the exact
    log-likelihood of each row computed in --devices processes."""
    if conditions_on_labels(model):  # summarize has no log-likelihood without labels either
        return summarize(model, x)
    summary: dict[str, Any] = {"family": model.family, "config": model.config}
    log_likelihood = distributed.evaluate(
        model, x, "log_prob", devices=args.devices, num_nodes=args.num_nodes, device=device
    )
    summary["log_likelihood_per_row"] = float(log_likelihood.mean())
    for criterion in ("bic", "aic"):
        if not hasattr(model, criterion):
            continue
        if not hasattr(model, "n_parameters"):  # no formula to use: the model's own
            summary[criterion] = float(getattr(model, criterion)(x))
            continue
        penalty = math.log(x.shape[0]) if criterion == "bic" else 2.0
        total = log_likelihood.sum()  # -2 log L + p log N, or + 2 p: as the mixture's bic/aic
        summary[criterion] = float(-2 * total + model.n_parameters() * penalty)
    return summary


def _sharded_score(
    args: argparse.Namespace,
    model: GenerativeModel,
    x: torch.Tensor,
    labels: torch.Tensor | None,
    samples: int,
    seed: int,
    device: torch.device,
) -> dict[str, Any]:
    """What :func:`_score_lines` prints of :func:`~pyrogen.diagnostics.score`, each row's
    bounds (and prediction) computed in --devices processes; process r draws its Monte
    Carlo samples seeded with ``seed + r``."""
    conditioned = conditions_on_labels(model)
    y = labels if conditioned else None  # score's condition; an ssvae's labels score predict
    diffusion = hasattr(model, "elbo_terms")
    if diffusion:
        calls = [("elbo_terms", {"num_samples": samples})]
    else:
        calls = [("elbo", {}), ("log_likelihood", {"num_samples": samples})]
    known = None if labels is None or not hasattr(model, "predict") else labels >= 0
    if known is not None and bool(known.any()):
        calls.append(("predict", {}))
    values = _in_processes(
        args, _score_process, (model.cpu(), x.cpu(), y, calls, seed, str(device)), device
    )
    stats: dict[str, Any] = {"n_rows": int(x.shape[0]), "quantity": likelihood_target(model)}
    given = given_mask(model)
    dims = math.prod(x.shape[1:]) if given is None else int((~given).sum())
    if diffusion:
        stats["elbo_per_example"] = _mean(values["elbo"])
        stats["log_likelihood_per_example"] = stats["elbo_per_example"]
        for term in DIFFUSION_TERMS:
            stats[f"{term}_per_example"] = _mean(values[term])
        stats["step_samples"] = samples
    else:
        stats["elbo_per_example"] = _mean(values["elbo"])
        stats["log_likelihood_per_example"] = _mean(values["log_likelihood"])
        stats["iw_samples"] = samples
    stats["bits_per_dim"] = -stats["log_likelihood_per_example"] / (dims * math.log(2))
    if "predict" in values:
        predicted, truth = values["predict"][known], labels[known].cpu()
        stats["labelled_rows"] = int(known.sum())
        if hasattr(model, "num_classes"):
            stats["accuracy"] = float((predicted == truth).double().mean())
        elif hasattr(model, "n_components"):
            stats["clustering_accuracy"] = clustering_accuracy(truth, predicted)
    return stats


def _mean(values: torch.Tensor) -> float:
    return float(values.double().mean())


def _in_processes(
    args: argparse.Namespace, target: Any, arguments: tuple[Any, ...], device: torch.device
) -> dict[str, Any]:
    """``target(*arguments)`` in the processes of --devices and --num-nodes: those of this
    process group (or of the launcher that started this one), else spawned ones; what the
    first process returned."""
    world_size = args.devices * args.num_nodes
    where = join(world_size, device.type, names="--devices, --num-nodes")
    if where.world_size > 1:
        payload = target(*arguments)
    else:
        payload = spawn(
            target,
            arguments,
            devices=args.devices,
            num_nodes=args.num_nodes,
            device_type=device.type,
        )
    if "error" in payload:
        raise ValueError(payload["error"])
    return payload


def _score_process(
    model: GenerativeModel,
    x: torch.Tensor,
    y: torch.Tensor | None,
    calls: list[tuple[str, dict[str, Any]]],
    seed: int,
    device: str,
) -> dict[str, Any]:
    """One process of ``evaluate --devices N``: its share of the rows for every method of
    ``calls``, in order from one noise stream (seed + rank); every row's results."""
    model = copy.deepcopy(model)  # spawned processes share the tensors they were sent
    where = cluster()
    pyro.set_rng_seed(seed + where.rank)
    results: dict[str, Any] = {}
    try:
        for method, options in calls:
            condition = {} if y is None or method == "predict" else {"y": y}
            if method == "elbo_terms":  # a dict of per-row terms: split here
                results.update(_sharded_terms(model, x, condition, options, device))
                continue
            results[method] = distributed.evaluate(
                model, x, method, **condition, device=device, seed=None, **options
            )
    except Exception as error:  # every process fails alike (evaluate agrees on errors)
        prefix = "" if isinstance(error, ValueError) else f"{type(error).__name__}: "
        return {"error": prefix + str(error)}
    return results


def _sharded_terms(
    model: GenerativeModel,
    x: torch.Tensor,
    condition: dict[str, torch.Tensor],
    options: dict[str, Any],
    device: str,
) -> dict[str, torch.Tensor]:
    """A diffusion model's ``elbo_terms`` of this process's share of the rows, then of all
    rows (a dict of per-row tensors, which :func:`~pyrogen.infer.distributed.evaluate`
    does not split)."""
    where = cluster()
    part = shard(x.shape[0], where)
    mine, failure = None, None
    try:
        model.to(process_device(torch.device(device), where))
        if part.stop > part.start:
            with torch.no_grad():
                terms = model.elbo_terms(
                    x[part], **{k: v[part] for k, v in condition.items()}, **options
                )
            mine = {name: value.detach().cpu() for name, value in terms.items()}
    except Exception as error:  # every process must reach the gather, or the others wait
        failure = (
            str(error) if isinstance(error, ValueError) else f"{type(error).__name__}: {error}"
        )
    parts = all_gather_objects((mine, failure), where)
    for rank, (_, message) in enumerate(parts):
        if message is not None:
            raise ValueError(f"{message} (in process {rank} of {where.world_size})")
    shares = [terms for terms, _ in parts if terms is not None]
    return {name: torch.cat([terms[name] for terms in shares]) for name in shares[0]}
