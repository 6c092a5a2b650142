"""Scores that compare a model's output with known answers (e.g. clusters with class labels)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment


def _as_1d_array(values: Any, name: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D sequence, got shape {array.shape}")
    return array


def clustering_accuracy(labels: Any, clusters: Any) -> float:
    """Accuracy of clusters under the best one-to-one matching of clusters to labels.

    Each cluster is given at most one label and each label at most one cluster, choosing the
    matching that gets the most examples right (the Hungarian algorithm on the contingency
    table, :func:`scipy.optimize.linear_sum_assignment`); examples in unmatched clusters
    count as wrong. With K clusters and C labels, ``min(K, C)`` pairs are matched, so extra
    clusters cannot all borrow the same label. The score is 1.0 when the clusters are the
    labels under some renaming, and it does not change when either is renamed.

    Args:
        labels: true classes, shape (N,): integers or any other discrete values (numpy
            array, torch tensor or sequence).
        clusters: cluster assignments, shape (N,), e.g. ``model.predict(x)``; the values are
            only names (any discrete values), and their number may differ from the labels'.

    Returns:
        The fraction of the N examples whose cluster is matched to their label, in [0, 1].

    Raises:
        ValueError: if either input is not 1-D, if their lengths differ, or if they are
            empty.

    Example:
        >>> clustering_accuracy([0, 0, 1, 1, 2], [5, 5, 3, 3, 3])
        0.8
    """
    truth = _as_1d_array(labels, "labels")
    found = _as_1d_array(clusters, "clusters")
    if truth.shape[0] != found.shape[0]:
        raise ValueError(
            f"labels, clusters: expected the same length, got {truth.shape[0]} labels and "
            f"{found.shape[0]} cluster assignments"
        )
    if truth.shape[0] == 0:
        raise ValueError("labels, clusters: expected at least one example, got none")
    label_names, label_index = np.unique(truth, return_inverse=True)
    cluster_names, cluster_index = np.unique(found, return_inverse=True)
    counts = np.zeros((len(cluster_names), len(label_names)), dtype=np.int64)
    np.add.at(counts, (cluster_index.reshape(-1), label_index.reshape(-1)), 1)
    rows, columns = linear_sum_assignment(counts, maximize=True)
    return float(counts[rows, columns].sum() / truth.shape[0])


def confusion_matrix(labels: Any, predicted: Any, num_classes: int | None = None) -> np.ndarray:
    """Counts (C, C) of examples by true class (rows) and predicted class (columns); rows
    labelled -1 (unlabelled) are left out.

    Args:
        labels: true classes (N,), integers in 0..C-1 or -1.
        predicted: predicted classes (N,), integers in 0..C-1.
        num_classes: C; default one more than the largest class seen.

    Example:
        >>> confusion_matrix([0, 0, 1, 1, -1], [0, 1, 1, 1, 0]).tolist()
        [[1, 1], [0, 2]]
    """
    truth = _as_1d_array(labels, "labels").astype(np.int64)
    guess = _as_1d_array(predicted, "predicted").astype(np.int64)
    if truth.shape != guess.shape:
        raise ValueError(
            f"labels, predicted: expected the same length, got {truth.shape[0]} and "
            f"{guess.shape[0]}"
        )
    kept = truth >= 0
    truth, guess = truth[kept], guess[kept]
    classes = num_classes or int(max(truth.max(initial=-1), guess.max(initial=-1)) + 1)
    counts = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(counts, (truth, guess), 1)
    return counts
