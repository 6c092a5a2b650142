"""How well a score separates in-distribution rows from out-of-distribution ones: the area
under the ROC curve, the average precision and the false-positive rate at a true-positive
rate, computed as scikit-learn computes them (ties included), and the accuracy of a
classifier as rows are rejected by a score.

The generic metrics take ``labels`` (1: positive) and ``scores`` (higher: more positive),
as ``sklearn.metrics`` does; :func:`ood_metrics` states the out-of-distribution convention
once: in-distribution rows are the positives, kept when their OOD score is low.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from pyrogen.checks import check_number

__all__ = ["aupr", "auroc", "fpr_at_tpr", "ood_metrics", "rejection_curve"]

#: The true-positive rate of :func:`ood_metrics`' ``fpr_at_95_tpr``.
DEFAULT_TPR = 0.95


def _as_array(values: Any, name: str) -> np.ndarray:
    """``values`` (N,) as a float64 numpy array, checked finite and one-dimensional."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().double().numpy()
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name}: expected a non-empty 1-d array, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name}: expected finite values, got NaN or inf")
    return array


def _curve(labels: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative true and false positives at each distinct threshold, highest first (as
    sklearn's ``_binary_clf_curve``: tied scores enter together)."""
    scores = _as_array(scores, "scores")
    truth = _as_array(labels, "labels")
    if truth.shape != scores.shape:
        raise ValueError(f"labels: expected shape {scores.shape}, as scores, got {truth.shape}")
    if not np.isin(truth, (0, 1)).all():
        raise ValueError("labels: expected 0 (negative) and 1 (positive) only")
    positives = int(truth.sum())
    if positives in (0, truth.size):
        raise ValueError("labels: expected both positives (1) and negatives (0), got one class")
    order = np.argsort(-scores, kind="mergesort")
    scores, truth = scores[order], truth[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(scores)), truth.size - 1]
    true_positives = np.cumsum(truth)[last_of_tie]
    return true_positives, 1 + last_of_tie - true_positives


def auroc(labels: Any, scores: Any) -> float:
    """Area under the ROC curve (as ``sklearn.metrics.roc_auc_score``): the probability that
    a random positive scores above a random negative, ties counted one half.

    Args:
        labels: (N,) 1 for a positive row, 0 for a negative one; both must occur.
        scores: (N,) higher = more positive.
    """
    true_positives, false_positives = _curve(labels, scores)
    tpr = np.r_[0.0, true_positives / true_positives[-1]]
    fpr = np.r_[0.0, false_positives / false_positives[-1]]
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))  # trapezoids


def aupr(labels: Any, scores: Any) -> float:
    """Area under the precision-recall curve as the average precision (as
    ``sklearn.metrics.average_precision_score``): the sum over thresholds of the precision
    times the recall gained there (no interpolation).

    Args:
        labels: (N,) 1 for a positive row, 0 for a negative one; both must occur.
        scores: (N,) higher = more positive.
    """
    true_positives, false_positives = _curve(labels, scores)
    precision = true_positives / (true_positives + false_positives)
    recall = true_positives / true_positives[-1]
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def fpr_at_tpr(labels: Any, scores: Any, tpr: float = DEFAULT_TPR) -> float:
    """The false-positive rate at the first threshold (from the highest) whose true-positive
    rate reaches ``tpr``: the share of negatives accepted when ``tpr`` of the positives are
    (the smallest ``fpr`` with ``tpr_curve >= tpr`` of ``sklearn.metrics.roc_curve``).

    Args:
        labels: (N,) 1 for a positive row, 0 for a negative one; both must occur.
        scores: (N,) higher = more positive.
        tpr: the true-positive rate, in (0, 1].
    """
    if check_number("tpr", tpr) > 1:
        raise ValueError(f"tpr: expected a rate in (0, 1], got {tpr!r}")
    true_positives, false_positives = _curve(labels, scores)
    reached = np.flatnonzero(true_positives / true_positives[-1] >= tpr)[0]
    return float(false_positives[reached] / false_positives[-1])


def ood_metrics(in_scores: Any, out_scores: Any, *, tpr: float = DEFAULT_TPR) -> dict[str, float]:
    """How well an OOD score (higher = more out-of-distribution) tells the two sets apart.

    The in-distribution rows are the positives and a row is accepted as in-distribution
    when its score is low (so the metrics are computed on ``-score``), the convention of
    Hendrycks & Gimpel (2017) and Liang et al. (2018) for FPR at 95% TPR.

    Args:
        in_scores: (N_in,) scores of in-distribution rows.
        out_scores: (N_out,) scores of out-of-distribution rows.
        tpr: the true-positive rate of ``fpr_at_tpr``.

    Returns:
        ``auroc`` (0.5: chance, 1: perfect, 0: perfectly reversed, as a raw likelihood can
        be), ``aupr_in`` (average precision, in-distribution rows positive), ``aupr_out``
        (average precision, out-of-distribution rows positive, ranked by the score itself),
        ``fpr_at_95_tpr`` (with ``tpr`` = 0.95; else named ``fpr_at_<100 tpr>_tpr``: the
        share of OOD rows accepted when that share of in-distribution rows is),
        ``n_in`` and ``n_out``.

    Example:
        >>> round(ood_metrics([0.1, 0.2, 0.3], [0.25, 0.9, 1.0])["auroc"], 4)
        0.8889
    """
    inside, outside = _as_array(in_scores, "in_scores"), _as_array(out_scores, "out_scores")
    labels = np.r_[np.ones(inside.size), np.zeros(outside.size)]
    scores = np.r_[inside, outside]
    return {
        "auroc": auroc(labels, -scores),
        "aupr_in": aupr(labels, -scores),
        "aupr_out": aupr(1 - labels, scores),
        f"fpr_at_{round(100 * tpr)}_tpr": fpr_at_tpr(labels, -scores, tpr),
        "n_in": int(inside.size),
        "n_out": int(outside.size),
    }


def rejection_curve(
    correct: Any, scores: Any, rates: Sequence[float] | np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Accuracy on the rows kept as rows are rejected, highest score first: the
    accuracy-rejection curve of a classifier that abstains on the rows a score finds
    out-of-distribution (for a generative classifier, e.g. by -log p(x) per value).

    Args:
        correct: (N,) whether each row's prediction is right (``y_pred == y_true``).
        scores: (N,) higher = rejected first (ties: in row order).
        rates: the shares of rows rejected, each in [0, 1); default 0, 0.05, ..., 0.95.

    Returns:
        (rates (R,), accuracy (R,) of the ``N - floor(rate N)`` rows kept).

    Example:
        >>> rejection_curve([True, False, True, True], [0.1, 0.9, 0.2, 0.3], [0, 0.25])[1]
        array([0.75, 1.  ])
    """
    right = _as_array(correct, "correct")
    order = np.argsort(-_as_array(scores, "scores"), kind="mergesort")
    if order.size != right.size:
        raise ValueError(f"scores: expected {right.size} values, one per row, got {order.size}")
    rates = np.arange(0, 1, 0.05) if rates is None else np.asarray(rates, dtype=np.float64)
    if rates.ndim != 1 or ((rates < 0) | (rates >= 1)).any():
        raise ValueError(f"rates: expected rejection rates in [0, 1), got {rates.tolist()}")
    kept = right[order]
    accuracy = [kept[int(np.floor(rate * right.size)) :].mean() for rate in rates]
    return rates, np.asarray(accuracy)
