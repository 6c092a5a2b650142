"""Run summaries as text: what ``pyrogen fit`` and ``pyrogen evaluate`` print, from a
run's summary (:func:`~pyrogen.diagnostics.write_run`) or the numbers of
:func:`~pyrogen.diagnostics.score`, each number named with the bound it is.

Example:
    >>> print(describe_model({"family": "gmm", "config": {"covariance": "diag"}}))
    gmm, diag covariance
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

#: How a line names each term of an ELBO a family reports beside it.
_TERMS = {"reconstruction": "recon.", "prior": "prior KL", "diffusion": "diff. KLs", "kl": "KL"}


def _processes(training: dict[str, Any]) -> str:
    """ ", in N processes" for a data-parallel run; nothing for one process."""
    count = training.get("processes", 1)
    return f", in {count} data-parallel processes" if count > 1 else ""


def describe_fit(summary: dict[str, Any], shape: tuple[int, ...], path: Path) -> str:
    """The human summary of a fit: data, model, fit statistics, parameters, run folder."""
    test = summary.get("test")
    if test is None:
        data = f"{summary.get('data', '?')}: {describe_shape(shape)}"
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
    if summary.get("labels"):
        lines.append(f"labels          {summary['labels']}")
    lines.append(f"model           {describe_model(summary)}")
    training = summary.get("training")
    if training and "epochs" in summary:
        lines.append(
            f"training        {summary['epochs']:g} epoch(s): {training['steps']} steps of up to "
            f"{summary['batch_size']} rows, {training['time_s']:.1f} s on {training['device']}"
            + _processes(training)
        )
    selection = summary.get("selection")
    if "n_components" in summary:
        how = f" (chosen by {selection['criterion'].upper()})" if selection else ""
        if summary.get("component_init"):
            how += f"; {summary['component_init']}"
        lines.append(f"components      {summary['n_components']}{how}")
    if selection:
        chosen = str(summary["n_components"])
        for k, score_ in selection["scores"].items():
            mark = "  <- chosen" if k == chosen else ""
            lines.append(f"  K={k:<3} {selection['criterion'].upper()} {score_:12.2f}{mark}")
    lines.extend(statistic_lines(summary))
    if test is not None:
        lines.extend(score_lines(test, prefix="test "))
    if "classification" in summary:
        lines.extend(classification_lines(summary["classification"]))
    if "mcmc" in summary:
        mcmc = summary["mcmc"]
        lines.append(
            f"NUTS            {mcmc['num_chains']} chains x {mcmc['num_samples']} draws "
            f"({mcmc['warmup']} warm-up), {mcmc['divergences']} divergences"
        )
    if "weights" in summary and "means" in summary:
        lines.append("")
        lines.extend(parameter_table(summary["weights"], summary["means"], summary.get("columns")))
    lines.append("")
    lines.append(f"run folder      {path}")
    return "\n".join(lines)


def describe_evaluation(
    model: str,
    summary: dict[str, Any],
    data: str,
    scores: dict[str, Any] | None = None,
    **more: str | None,
) -> str:
    """What ``pyrogen evaluate`` prints: the ``model`` (a path, described by ``summary``'s
    ``family`` and ``config``), the ``data``, the lines of ``more`` that have a value
    (``preprocessing=...``, ``labels=...``), then the bounds of ``scores`` (from
    :func:`~pyrogen.diagnostics.score`) or else the exact statistics of ``summary``.

    Example:
        >>> summary = {"family": "gmm", "config": {"covariance": "diag"}, "bic": 10.0}
        >>> print(describe_evaluation("runs/gmm", summary, "faithful.csv"))
        model           runs/gmm (gmm, diag covariance)
        data            faithful.csv
        BIC             10.00
    """
    lines = [_label("model") + f"{model} ({describe_model(summary)})", _label("data") + data]
    lines += [_label(name) + text for name, text in more.items() if text]
    return "\n".join(lines + (score_lines(scores) if scores else statistic_lines(summary)))


def statistic_lines(summary: dict[str, Any]) -> list[str]:
    """Log-likelihood per row and the information criteria, where the model has them."""
    lines = []
    if "log_likelihood_per_row" in summary:
        lines.append(
            f"log-likelihood  {_number(summary['log_likelihood_per_row'])} nats per row "
            "(exact, at the point estimates, mean over rows)"
        )
    if "log_partition" in summary:  # an energy model's normalizer, which that number rests on
        lines.append(
            _label("log Z") + f"{_number(summary['log_partition'])} nats by "
            f"{summary['log_partition_method']} (error {summary['log_partition_error']:.1g} nats)"
        )
    for criterion in ("bic", "aic"):
        if criterion in summary:
            lines.append(f"{criterion.upper():<15} {_number(summary[criterion], 2)}")
    return lines


def classification_lines(classification: dict[str, Any]) -> list[str]:
    """A classifier's accuracy and confusion matrix (rows: true class, columns: predicted)
    on the rows it was fitted on, or its confusion matrix on the held-out rows (whose
    accuracy is among the test scores), as a run summary holds them.

    Example:
        >>> for line in classification_lines({"labelled_rows": 4, "accuracy": 0.75,
        ...                                   "confusion_matrix": [[1, 1], [0, 2]]}):
        ...     print(line)
        accuracy        0.7500 on the 4 labelled rows it was fitted on (not held out)
        confusion       rows: true class, columns: predicted
                             0     1
                   0         1     1
                   1         0     2
    """
    counts = classification["confusion_matrix"]
    header = "rows: true class, columns: predicted"
    if classification.get("held_out"):
        lines = [_label("test confusion") + header]
    else:
        lines = [
            _label("accuracy") + f"{_number(classification['accuracy'])} on the "
            f"{classification['labelled_rows']} labelled rows it was fitted on (not held out)",
            _label("confusion") + header,
        ]
    lines.append(" " * 16 + "".join(f"{k:>6}" for k in range(len(counts))))
    lines += [f"{k:>12}    " + "".join(f"{n:>6}" for n in row) for k, row in enumerate(counts)]
    return lines


def score_lines(stats: dict[str, Any], prefix: str = "") -> list[str]:
    """The numbers of :func:`~pyrogen.diagnostics.score`, each with the bound it is and the
    quantity it bounds (log p(x), or a conditional one such as log p(x | y))."""
    quantity = stats.get("quantity", "log p(x)")
    if "mmd" in stats:  # a model without a likelihood: its samples against the rows
        return _sample_test_lines(stats, prefix)
    lines = []
    if any(_number(value) in _NOT_FINITE for value in _scores(stats)):
        lines.append(_label(f"{prefix}warning") + "the score is not finite (nan or inf): the "
                     "model or the data give values out of its range")  # fmt: skip
    if "elbo_per_example" in stats:
        lines.append(
            _label(f"{prefix}ELBO")
            + f"{_number(stats['elbo_per_example'])} nats per example (a lower bound on {quantity})"
        )
    bounds = ("elbo_per_example", "log_likelihood_per_example")
    terms = [key for key in stats if key.endswith("_per_example") and key not in bounds]
    for key in terms:
        term = key.removesuffix("_per_example")
        name = _TERMS.get(term, term)
        lines.append(_label(f"{prefix}{name}") + f"{_number(stats[key])} nats per example")
    if terms and "step_samples" in stats:  # the ELBO's terms stand in for a tighter bound
        lines.append(
            _label(f"{prefix}bits/dim")
            + f"{_number(stats['bits_per_dim'])} (from the ELBO; {stats['step_samples']} step "
            "draw(s) per example)"
        )
        return lines
    bound = f"IWAE bound, K = {stats['iw_samples']}" if "iw_samples" in stats else "exact"
    name, value = f"{prefix}{quantity}", f"{_number(stats['log_likelihood_per_example'])}"
    if len(name) < 16:
        lines.append(_label(name) + f"{value} nats per example ({bound})")
    else:  # a long conditional quantity goes after the number
        lines.append(
            _label(f"{prefix}log-lik.") + f"{value} nats per example: {quantity} ({bound})"
        )
    if "bits_per_dim" in stats:
        source = "exact" if bound == "exact" else f"from the {bound}"
        lines.append(_label(f"{prefix}bits/dim") + f"{_number(stats['bits_per_dim'])} ({source})")
    rows = stats.get("labelled_rows")
    if "accuracy" in stats:
        lines.append(
            _label(f"{prefix}accuracy")
            + f"{_number(stats['accuracy'])} of {rows} labelled rows (predict: the most probable "
            "class under the classifier q(y | x))"
        )
    if "log_loss" in stats:
        lines.append(
            _label(f"{prefix}log-loss")
            + f"{_number(stats['log_loss'])} nats per labelled row (mean -log p(y | x) of "
            "their labels)"
        )
    if "clustering_accuracy" in stats:
        lines.append(
            _label(f"{prefix}clustering")
            + f"{_number(stats['clustering_accuracy'])} accuracy on {rows} labelled rows (each "
            "component matched to one label, the best one-to-one matching)"
        )
    return lines


def _sample_test_lines(stats: dict[str, Any], prefix: str) -> list[str]:
    """The two-sample tests of a model without a likelihood (a GAN)."""
    rows = stats["n_rows"]
    return [
        _label(f"{prefix}samples") + f"{rows} draws against {rows} rows (no likelihood to score)",
        _label(f"{prefix}MMD^2") + f"{stats['mmd']:.4g} (Gaussian kernel; permutation p-value "
        f"{stats['mmd_p_value']:.3g})",
        _label(f"{prefix}1-NN accuracy") + f"{_number(stats['nearest_neighbour_accuracy'])} "
        f"(1/2: indistinguishable; permutation p-value {stats['nearest_neighbour_p_value']:.3g})",
    ]


_NOT_FINITE = ("nan", "inf", "-inf")


def _scores(stats: dict[str, Any]) -> list[Any]:
    """The numbers of ``stats`` that are scores (per example, bits/dim)."""
    return [v for k, v in stats.items() if k.endswith("_per_example") or k == "bits_per_dim"]


def _number(value: Any, digits: int = 4) -> str:
    """``value`` with ``digits`` decimals; None and NaN as ``nan``, infinities as ``inf``.

    Example:
        >>> _number(1.23456), _number(None), _number(float("-inf"))
        ('1.2346', 'nan', '-inf')
    """
    value = float("nan") if value is None else float(value)
    return f"{value:.{digits}f}" if math.isfinite(value) else str(value)


def _label(text: str) -> str:
    """A line's name, padded to the column of values (16 characters)."""
    return f"{text:<15} "


def describe_model(summary: dict[str, Any]) -> str:
    """The family and its settings that matter, from a summary's ``family`` and ``config``."""
    config = summary.get("config", {})
    details = [f"{config['covariance']} covariance"] if "covariance" in config else []
    if config.get("num_classes"):
        details.append(f"{config['num_classes']} classes")
    if "n_components" in config and "latent_dim" in config:  # a mixture prior (gmvae)
        details.append(f"{config['n_components']} components")
    observed = config.get("observed")
    if observed is not None:
        details.append(
            f"given the {observed} half" if isinstance(observed, str) else "given a fixed mask"
        )
    for key in ("encoder", "likelihood", "objective"):
        if key in config:
            details.append(f"{config[key]} {key}")
    if "classifier_weight" in config:
        details.append(f"classifier weight {config['classifier_weight']:g}")
        details.append(f"labelled share {config['labelled_share']:g}")
    if config.get("beta", 1) != 1:
        details.append(f"beta {config['beta']:g}")
    if config.get("num_particles", 1) > 1:
        details.append(f"{config['num_particles']} particles")
    # A run's own record of its inference wins: a NUTS run's model is configured as MAP.
    inference = summary.get("inference", config.get("inference"))
    if inference is not None:
        details.append(f"{inference} inference")
    return ", ".join([summary["family"], *details])


def describe_shape(shape: tuple[int, ...]) -> str:
    """``272 rows x 2 columns``, or ``N rows of shape (...)`` for examples of more dims."""
    if len(shape) == 2:
        return f"{shape[0]} rows x {shape[1]} columns"
    return f"{shape[0]} rows of shape {tuple(shape[1:])}"


def parameter_table(
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
