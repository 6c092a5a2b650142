"""Held-out statistics of a fitted model: :func:`score` (per-example bounds and what each
one is) and :func:`summarize` (fit statistics).

Both ask the model only through its contract: ``model.score_examples`` computes every
number of every example (the one place scoring is done), and :func:`reduce_scores` turns
those per-example tensors into the reported means, standard errors and descriptions, the
same way whether the rows were scored in this process or split over several.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch

from pyrogen.checks import as_tensor, check_int, float_dtype_of
from pyrogen.diagnostics.metrics import clustering_accuracy
from pyrogen.diagnostics.sample_tests import mmd_test, nearest_neighbour_test
from pyrogen.infer import distributed
from pyrogen.models.base import DEFAULT_IW_SAMPLES, GenerativeModel

__all__ = ["DEFAULT_IW_SAMPLES", "reduce_scores", "score", "summarize"]

#: Per-example key of :meth:`GenerativeModel.score_examples` holding ``predict(x)``.
PREDICTED = "predicted"
#: Per-example key of :func:`score`'s rows holding log p(y_n | x_n) of a class predictor,
#: from its ``predict_proba`` at the row's label (reduced to the log-loss, not to a mean).
LABEL_LOG_PROB = "label_log_prob"
#: Suffix of the per-example means in :func:`score`'s statistics.
PER_EXAMPLE = "_per_example"
UNITS = "nats per example (bits_per_dim: bits per value)"


def summarize(
    model: GenerativeModel,
    data: Any,
    *,
    devices: int = 1,
    num_nodes: int = 1,
    device: str | torch.device | None = None,
) -> dict[str, Any]:
    """Fit statistics of ``model`` on ``data``, as plain JSON-ready values.

    Args:
        model: a fitted model.
        data: rows of shape (N, ...).
        devices: processes per node computing the log-likelihood (see :func:`score`).
        num_nodes: machines computing it.
        device: where those processes compute (``"cuda"``: one GPU each).

    Returns:
        ``family``, ``config``, ``n_rows``, ``data_shape`` (of one row), ``n_features`` (for
        (N, D) data); ``n_components`` where the model predicts mixture components;
        ``log_likelihood_per_row`` (mean over rows of the exact log-likelihood, in nats)
        where the model has one and needs no labels; and the model's own
        :meth:`~pyrogen.models.GenerativeModel.fit_statistics` (a mixture's ``bic``,
        ``aic``, ``weights`` (K,) and ``means`` (K, D)). Models
        without an exact log-likelihood (the VAE) get no log-likelihood here: see
        :func:`score`, which says which bound each number is.

    Example:
        >>> import pyrogen
        >>> from pyrogen.diagnostics import summarize
        >>> x = pyrogen.data.old_faithful()
        >>> result = pyrogen.fit(pyrogen.GaussianMixture(2), x, steps=20, progress=False)
        >>> round(summarize(result.model, x)["log_likelihood_per_row"], 1)
        -4.2
    """
    check_model(model)
    x = as_float_tensor(data, "data")
    summary: dict[str, Any] = {
        "family": model.family,
        "config": model.config,
        "n_rows": int(x.shape[0]),
        "data_shape": list(x.shape[1:]),
    }
    if x.dim() == 2:
        summary["n_features"] = int(x.shape[1])
    if model.predicts == "component":
        summary["n_components"] = _component_count(model)
    log_likelihood = None
    with torch.no_grad():
        if model.exact_likelihood and not model.conditions_on_labels:
            if devices * num_nodes > 1 or device is not None:
                scale_out = {"devices": devices, "num_nodes": num_nodes, "device": device}
                log_likelihood = score_rows(model, x, None, **scale_out)["log_likelihood"]
            else:
                log_likelihood = model.log_likelihood(x)
            summary["log_likelihood_per_row"] = float(log_likelihood.mean())
        summary.update(model.fit_statistics(x, log_likelihood))
    return jsonable(summary)


def score(
    model: GenerativeModel,
    data: Any,
    *,
    labels: Any = None,
    iw_samples: int | None = None,
    seed: int | None = 0,
    devices: int = 1,
    num_nodes: int = 1,
    device: str | torch.device | None = None,
) -> dict[str, Any]:
    """Held-out statistics of ``model`` on ``data``, in nats per example, naming each bound.

    For a model with an exact log-likelihood (the mixture, a continuous flow), its mean.
    For the others, the mean ELBO (a lower bound), the mean tighter bound the family
    computes (the importance-weighted L_K with K = ``iw_samples`` for the VAEs) and bits
    per dimension ``-log_likelihood / (D ln 2)``, D the values each example is scored on
    (``model.values_per_example``); a diffusion model also reports its ELBO's terms.

    What is bounded (``quantity``, ``model.likelihood_target``) is log p(x), or for a model
    conditioned on labels or on given values log p(x | y), log p(x_missing | x_given) or
    log p(x_missing | x_given, y) (only the missing values are scored, and D counts them).

    Args:
        model: a fitted model.
        data: examples of shape ``(N, *data_shape)``.
        labels: class labels (N,) of ``data``, or None. The condition y of a model
            conditioned on labels (required there); for a model that predicts classes
            (``model.predicts == "class"``) the ``accuracy`` of ``predict``, and for one that
            predicts mixture components the ``clustering_accuracy`` (best one-to-one
            matching of components to labels). Rows labelled -1 (unlabelled) are left out
            of both.
        iw_samples: what ``model.score_samples_name`` names: K, the importance samples per
            example of the log-likelihood bound, or a diffusion model's steps drawn per
            example; None: ``model.default_score_samples``.
        seed: seeds the Monte Carlo draws (the global random state is left as it was), so
            the same model, data and seed give the same numbers; None draws from the global
            random state.
        devices: processes per node scoring the rows; above 1 (or with ``num_nodes``) the
            rows are split over processes by :func:`pyrogen.infer.distributed.evaluate`
            and the statistics are reduced from all of them, as from one.
        num_nodes: machines scoring the rows.
        device: where those processes compute (``"cuda"``: one GPU each).

    Returns:
        ``n_rows``; ``quantity``; ``log_likelihood_per_example``; for models with bounds
        also ``elbo_per_example`` (and each term the family reports, as
        ``<term>_per_example``), ``iw_samples`` or ``step_samples`` and ``bits_per_dim``;
        with labels, where the model predicts them, ``accuracy`` or
        ``clustering_accuracy`` and ``labelled_rows`` (and, for a class predictor,
        ``log_loss``: the labels' mean -log p(y | x) under ``predict_proba``, nats);
        ``standard_errors`` (of each mean over the N examples: std / sqrt(N), the spread
        between examples and Monte Carlo noise); ``bounds`` (what each number is); ``units``.

    Raises:
        TypeError: ``model`` is not a pyrogen model.
        ValueError: ``iw_samples`` is not a positive integer, the data do not fit, or
            ``labels`` are missing for a model conditioned on them or do not fit.

    Example:
        >>> import torch, pyrogen
        >>> from pyrogen.diagnostics import score
        >>> stats = score(pyrogen.VAE((16,), latent_dim=2), torch.rand(20, 16), iw_samples=10)
        >>> stats["bounds"]["log_likelihood_per_example"]
        'IWAE bound L_K with K = 10 importance samples: below log p(x) in expectation'
    """
    check_model(model)
    samples = model.default_score_samples if iw_samples is None else iw_samples
    check_int("iw_samples", samples)
    x = as_float_tensor(data, "data")
    if not model.has_likelihood:
        return sample_scores(model, x, labels=labels, seed=seed)
    y = score_labels(model, labels, x.shape[0])
    condition = y if model.conditions_on_labels else None
    scale_out = {"devices": devices, "num_nodes": num_nodes, "device": device}
    per_example = score_rows(model, x, condition, num_samples=samples, seed=seed, **scale_out)
    if y is not None and model.predicts == "class":
        per_example[LABEL_LOG_PROB] = label_log_probs(model, x, y, seed=seed)
    values = model.values_per_example(x)
    return reduce_scores(model, per_example, num_samples=samples, values=values, labels=y)


#: Most rows :func:`sample_scores` compares (the tests hold an (R, R) distance matrix).
SAMPLE_TEST_ROWS = 2000


def sample_scores(
    model: GenerativeModel, x: torch.Tensor, *, labels: Any = None, seed: int | None = 0
) -> dict[str, Any]:
    """What :func:`score` reports for a model without a likelihood (a GAN): as many draws
    as rows (at most :data:`SAMPLE_TEST_ROWS`, a seeded subset) against the rows, by the
    kernel MMD and the 1-nearest-neighbour two-sample tests
    (:mod:`~pyrogen.diagnostics.sample_tests`); a conditional model draws with the rows'
    labels.

    Returns:
        ``n_rows``, ``quantity``, ``mmd`` and ``mmd_p_value``, ``nearest_neighbour_accuracy``
        and ``nearest_neighbour_p_value``, ``bounds`` (what each number is), ``units``.
    """
    rows = x.shape[0]
    generator = torch.Generator().manual_seed(0 if seed is None else seed)
    keep = torch.randperm(rows, generator=generator)[:SAMPLE_TEST_ROWS].sort().values
    y = None if labels is None else torch.as_tensor(labels)[keep]
    if model.takes_labels and y is None:
        raise ValueError(f"labels: expected the class of each row to draw {model.family} samples")
    with torch.random.fork_rng(), torch.no_grad():
        torch.manual_seed(0 if seed is None else seed)
        draws = model.sample(len(keep), y) if y is not None else model.sample(len(keep))
    reference = x[keep].to(draws.device)
    mmd = mmd_test(draws, reference, seed=seed or 0)
    nearest = nearest_neighbour_test(draws, reference, seed=seed or 0)
    return {
        "n_rows": int(len(keep)),
        "quantity": "its samples against these rows (the model has no likelihood)",
        "mmd": mmd.statistic,
        "mmd_p_value": mmd.p_value,
        "nearest_neighbour_accuracy": nearest.statistic,
        "nearest_neighbour_p_value": nearest.p_value,
        "bounds": {"mmd": mmd.name, "nearest_neighbour_accuracy": nearest.name},
        "units": "MMD^2 in the kernel's units; accuracy a share; p-values by permutation",
    }


def score_rows(
    model: GenerativeModel,
    x: torch.Tensor,
    y: torch.Tensor | None,
    *,
    num_samples: int | None = None,
    seed: int | None = 0,
    devices: int = 1,
    num_nodes: int = 1,
    device: str | torch.device | None = None,
) -> dict[str, torch.Tensor]:
    """``model.score_examples(x, y, num_samples=...)`` seeded, on the CPU: in this process,
    or with the rows split over ``devices * num_nodes`` processes (concatenated in row
    order)."""
    check_int("devices", devices)
    check_int("num_nodes", num_nodes)
    if devices * num_nodes > 1:
        scale_out = {"devices": devices, "num_nodes": num_nodes, "device": device}
        scores = distributed.evaluate(model, x, y, num_samples=num_samples, seed=seed, **scale_out)
    else:
        if device is not None:
            model.to(device)
        with seeded(seed), torch.no_grad():
            scores = model.score_examples(x, y, num_samples=num_samples)
    return {name: values.detach().cpu() for name, values in scores.items()}


def reduce_scores(
    model: GenerativeModel,
    per_example: Mapping[str, torch.Tensor],
    *,
    num_samples: int,
    values: int,
    labels: torch.Tensor | None = None,
) -> dict[str, Any]:
    """:func:`score`'s statistics from the per-example numbers of
    :meth:`~pyrogen.models.GenerativeModel.score_examples`.

    Args:
        model: the model that scored them (for what it reports and how to name it).
        per_example: name -> tensor (N,), as ``score_examples`` returns it (``predicted``
            included where the model predicts).
        num_samples: the ``num_samples`` they were computed with.
        values: D, the values per example (``model.values_per_example``).
        labels: labels (N,) to score ``predicted`` against (-1: unlabelled), or None.

    Returns:
        the statistics described in :func:`score`, JSON-ready.
    """
    means = {
        name: tensor
        for name, tensor in per_example.items()
        if name not in (PREDICTED, LABEL_LOG_PROB)
    }
    count = int(means["log_likelihood"].shape[0])
    stats: dict[str, Any] = {"n_rows": count, "quantity": model.likelihood_target}
    if not model.exact_likelihood:
        stats[model.score_samples_name] = num_samples
    descriptions = model.score_descriptions(num_samples, values)
    bounds = {
        f"{name}{PER_EXAMPLE}" if name in means else name: text
        for name, text in descriptions.items()
    }
    if labels is not None and PREDICTED in per_example:
        bounds.update(_prediction_scores(model, per_example[PREDICTED], labels, stats))
    if labels is not None and LABEL_LOG_PROB in per_example:
        bounds.update(_log_loss(per_example[LABEL_LOG_PROB], labels, stats))
    for name, tensor in means.items():
        stats[f"{name}{PER_EXAMPLE}"] = float(tensor.double().mean())
    if "bits_per_dim" in descriptions:
        ll = stats[f"log_likelihood{PER_EXAMPLE}"]
        stats["bits_per_dim"] = -ll / (values * math.log(2))
    stats["standard_errors"] = {
        f"{name}{PER_EXAMPLE}": float(tensor.double().std() / math.sqrt(count))
        if count > 1
        else None
        for name, tensor in means.items()
    }
    stats["bounds"] = bounds
    stats["units"] = UNITS
    return jsonable(stats)


def _prediction_scores(
    model: GenerativeModel, predicted: torch.Tensor, y: torch.Tensor, stats: dict[str, Any]
) -> dict[str, str]:
    """Accuracy of ``predict`` against the labels y (rows >= 0), by what the model predicts."""
    known = y >= 0
    if not bool(known.any()):
        return {}
    guesses, truth = predicted.cpu()[known], y[known]
    stats["labelled_rows"] = int(known.sum())
    if model.predicts == "class":
        stats["accuracy"] = float((guesses == truth).double().mean())
        return {
            "accuracy": "fraction of the labelled rows whose predict(x) (the most probable "
            "class under the model's classifier) is their label"
        }
    stats["clustering_accuracy"] = clustering_accuracy(truth, guesses)
    return {
        "clustering_accuracy": "fraction of the labelled rows whose predict(x) (the most "
        f"probable of the {_component_count(model)} components) is matched to their label by "
        "the best one-to-one matching of components to labels (Hungarian algorithm)"
    }


def label_log_probs(
    model: GenerativeModel, x: torch.Tensor, y: torch.Tensor, *, seed: int | None = 0
) -> torch.Tensor:
    """log p(y_n | x_n) of each row under a class predictor's ``predict_proba`` (N, C), at
    its label y_n (N,); NaN where the row is unlabelled (-1). Shape (N,), float64, CPU."""
    with seeded(seed), torch.no_grad():
        probs = model.predict_proba(x).detach().cpu().double()
    known = y >= 0
    picked = probs.gather(-1, y.clamp(min=0)[:, None])[:, 0]
    return torch.where(known, picked.log(), torch.full_like(picked, math.nan))


def _log_loss(
    label_log_prob: torch.Tensor, y: torch.Tensor, stats: dict[str, Any]
) -> dict[str, str]:
    """The log-loss, mean -log p(y | x) over the labelled rows (y >= 0), into ``stats``."""
    known = y >= 0
    if not bool(known.any()):
        return {}
    losses = -label_log_prob[known]
    stats["log_loss"] = float(losses.mean())
    stats["labelled_rows"] = int(known.sum())
    return {
        "log_loss": "mean over the labelled rows of -log p(y | x), the probability "
        "predict_proba gives their label (nats; 0 is perfect, log C a uniform guess)"
    }


def _component_count(model: GenerativeModel) -> int | None:
    """K, the mixture components ``predict`` chooses from: the labels of ``sample`` where
    it takes them, else the constructor's ``n_components``."""
    if model.label_count is not None:
        return model.label_count
    return model.config.get("n_components")


def score_labels(model: GenerativeModel, labels: Any, rows: int) -> torch.Tensor | None:
    """The labels (rows,) :func:`score` uses (the condition y, or the truth ``predict`` is
    scored against), checked; None where there are none or the model has no use for them.

    Raises:
        ValueError: the model is conditioned on labels and there are none, or they do not
            fit.
    """
    uses = model.conditions_on_labels or model.predicts is not None
    if labels is not None and uses:
        return label_tensor(labels, rows)
    if model.conditions_on_labels:
        raise ValueError(
            f"labels: expected the labels ({rows},) of the data for a {model.family} "
            f"conditioned on {model.label_count} classes (its bounds are of "
            f"{model.likelihood_target}), got None"
        )
    return None


def label_tensor(labels: Any, rows: int) -> torch.Tensor:
    """Integer class labels (rows,) as an int64 CPU tensor.

    Raises:
        ValueError: not one label per row, or not integers.
    """
    if torch.is_tensor(labels):
        labels = labels.detach().cpu()
    values = torch.as_tensor(np.asarray(labels))
    if values.dim() != 1 or values.shape[0] != rows:
        raise ValueError(
            f"labels: expected shape ({rows},), one per example, got {tuple(values.shape)}"
        )
    if values.is_floating_point() and not torch.equal(values, values.round()):
        raise ValueError("labels: expected integer class labels, got non-integer values")
    return values.long()


def check_model(model: Any) -> None:
    """Raise TypeError unless ``model`` follows the model contract."""
    if not isinstance(model, GenerativeModel):
        raise TypeError(f"model: expected a pyrogen GenerativeModel, got {type(model).__name__}")


def as_float_tensor(data: Any, name: str) -> torch.Tensor:
    """``data`` (N, ...) as a floating-point tensor (its own float dtype kept)."""
    return as_tensor(data, name=name, ndim=None, dtype=float_dtype_of(data))


@contextlib.contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    """Seed torch's generators inside the block and restore them after (no seed: no-op)."""
    if seed is None:
        yield
        return
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def jsonable(value: Any) -> Any:
    """Plain JSON values: tensors and numpy values become lists and numbers, and NaN/inf
    become null (strict JSON has no such numbers)."""
    if isinstance(value, Mapping):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(item) for item in value]
    if isinstance(value, torch.Tensor):
        return jsonable(value.detach().cpu().tolist())
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
