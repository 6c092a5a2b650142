"""clustering_accuracy: the best one-to-one matching, checked against brute force."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from pyrogen.diagnostics import clustering_accuracy


def brute_force_accuracy(labels: np.ndarray, clusters: np.ndarray) -> float:
    """Try every one-to-one map from cluster ids to label ids (padded to a square)."""
    size = max(labels.max(), clusters.max()) + 1
    best = 0
    for mapping in itertools.permutations(range(size)):
        best = max(best, int((np.asarray(mapping)[clusters] == labels).sum()))
    return best / len(labels)


@pytest.mark.parametrize("n_labels, n_clusters", [(2, 2), (3, 3), (4, 4), (3, 5), (5, 3)])
def test_matches_brute_force(n_labels, n_clusters):
    rng = np.random.default_rng(n_labels * 10 + n_clusters)
    for _ in range(20):
        n = int(rng.integers(1, 40))
        labels = rng.integers(0, n_labels, size=n)
        # Mostly a renaming of the labels, with some noise, so scores span 0..1.
        renaming = rng.permutation(max(n_labels, n_clusters))[:n_labels] % n_clusters
        clusters = np.where(rng.random(n) < 0.6, renaming[labels], rng.integers(0, n_clusters, n))
        assert clustering_accuracy(labels, clusters) == pytest.approx(
            brute_force_accuracy(labels, clusters)
        )


def test_renamed_clusters_score_one_and_any_names_work():
    labels = np.array([0, 0, 1, 1, 2, 2, 2])
    assert clustering_accuracy(labels, np.array([7, 7, -3, -3, 4, 4, 4])) == 1.0
    assert clustering_accuracy(["a", "a", "b"], [1, 1, 0]) == 1.0


def test_extra_clusters_cannot_share_a_label():
    # Four clusters, two labels: only two clusters can be matched.
    labels = [0, 0, 0, 0, 1, 1, 1, 1]
    clusters = [0, 0, 1, 1, 2, 2, 3, 3]
    assert clustering_accuracy(labels, clusters) == 0.5


def test_accepts_tensors_lists_and_arrays_alike():
    labels = [0, 1, 1, 2, 2, 2]
    clusters = [1, 0, 0, 2, 2, 0]
    expected = 5 / 6
    assert clustering_accuracy(labels, clusters) == pytest.approx(expected)
    assert clustering_accuracy(torch.tensor(labels), torch.tensor(clusters)) == pytest.approx(
        expected
    )
    assert clustering_accuracy(np.array(labels), torch.tensor(clusters)) == pytest.approx(expected)


def test_mismatched_lengths_raise():
    with pytest.raises(ValueError, match="same length.*3 labels and 2 cluster"):
        clustering_accuracy([0, 1, 1], [0, 1])


@pytest.mark.parametrize(
    "labels, clusters, match",
    [
        ([], [], "at least one example"),
        ([[0, 1]], [[0, 1]], "labels: expected a 1-D"),
        ([0, 1], [[0], [1]], "clusters: expected a 1-D"),
    ],
)
def test_bad_shapes_raise(labels, clusters, match):
    with pytest.raises(ValueError, match=match):
        clustering_accuracy(labels, clusters)
