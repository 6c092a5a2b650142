"""The Fréchet distance between fitted Gaussians against scipy's matrix square root and a
closed form on known Gaussians; the feature classifier that it is computed in."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from pyrogen.diagnostics.feature_classifier import (
    classifier_accuracy,
    classifier_frechet_distance,
    train_feature_classifier,
)
from pyrogen.diagnostics.sample_tests import frechet_distance


def _gaussian(n: int, mean, root, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    root = torch.as_tensor(root, dtype=torch.float64)
    return torch.randn(n, len(root), generator=g, dtype=torch.float64) @ root.T + torch.tensor(
        mean, dtype=torch.float64
    )


def test_equals_the_closed_form_with_scipy_square_roots_on_the_fitted_gaussians():
    a = _gaussian(300, [0.0, 1.0, -1.0], [[1, 0, 0], [0.5, 2, 0], [0.3, -0.4, 0.7]], 0)
    b = _gaussian(200, [0.5, 0.0, 0.0], [[2, 0, 0], [-0.6, 0.5, 0], [0.1, 0.9, 1.5]], 1)
    sa, sb = np.cov(a.numpy().T), np.cov(b.numpy().T)
    root = scipy.linalg.sqrtm(sa)
    expected = (
        np.sum((a.numpy().mean(0) - b.numpy().mean(0)) ** 2)
        + np.trace(sa + sb)
        - 2 * np.trace(scipy.linalg.sqrtm(root @ sb @ root)).real
    )
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(b, a) == pytest.approx(expected, rel=1e-9)  # symmetric


def test_known_gaussians_and_identical_sets():
    # N(0, diag(1, 4)) against N((1, 1), diag(4, 1)): |mu|^2 = 2, traces 10, cross 2 * 4
    a = _gaussian(40000, [0.0, 0.0], [[1, 0], [0, 2]], 2)
    b = _gaussian(40000, [1.0, 1.0], [[2, 0], [0, 1]], 3)
    # sampling error of the fitted means and covariances at N = 40000: about 0.03
    assert frechet_distance(a, b) == pytest.approx(4.0, abs=0.1)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-10)


def test_rank_deficient_covariances_stay_real_and_non_negative():
    a = _gaussian(5, [0.0] * 8, torch.eye(8), 4)  # 5 rows in 8 dimensions: singular S
    assert 0 <= frechet_distance(a, a[[1, 0, 2, 3, 4]]) < 1e-8
    assert frechet_distance(a, a + 2.0) == pytest.approx(32.0, rel=1e-8)


def test_bad_feature_sets_are_named():
    with pytest.raises(ValueError, match="same size"):
        frechet_distance(torch.zeros(5, 2), torch.zeros(5, 3))


def test_the_feature_classifier_learns_images_and_judges_samples_in_its_features():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(120) % 3
    x = torch.rand(120, 1, 8, 8, generator=g) * 0.3
    for k in range(3):  # class k: a bright band in rows 2k..2k+2
        x[y == k, :, 2 * k : 2 * k + 3, :] += 0.7
    net = train_feature_classifier(x, y, hidden=(16,), channels=(4, 8), steps=150, seed=0)
    assert net.embed(x[:5]).shape == (5, 16) and net(x[:5]).shape == (5, 3)
    assert classifier_accuracy(net, x, y) > 0.95
    same = classifier_frechet_distance(net, x[::2], x[1::2])
    other = classifier_frechet_distance(net, torch.rand(60, 1, 8, 8, generator=g), x[1::2])
    assert 0 <= same < other
