"""Bayes' rule over fitted densities, against a hand computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

import pyrogen

F64 = torch.float64


def _two_ring_classes(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    # class 0: two blobs left and right; class 1: two blobs above and below
    y = torch.arange(n) % 2
    side = torch.where(torch.arange(n) % 4 < 2, -2.0, 2.0).to(F64)
    centre = torch.stack([side, torch.zeros(n, dtype=F64)], 1)
    centre = torch.where(y[:, None] == 1, centre.flip(1), centre)
    return centre + 0.6 * torch.randn(n, 2, generator=generator, dtype=F64), y


@pytest.fixture(scope="module")
def mixtures():
    generator = torch.Generator().manual_seed(0)
    x, y = _two_ring_classes(400, generator)
    densities = []
    for k in (0, 1):
        density = pyrogen.GaussianMixture(2, covariance="full")
        pyrogen.fit(density, x[y == k], progress=False)
        densities.append(density)
    return densities, generator


def _by_hand(density, points: np.ndarray) -> np.ndarray:
    weights, means, covariances = (
        density.weights_.numpy(),
        density.means_.numpy(),
        density.covariances_.numpy(),
    )
    return np.log(
        sum(
            w * multivariate_normal(m, c).pdf(points)
            for w, m, c in zip(weights, means, covariances, strict=True)
        )
    )


def test_mixture_discriminant_analysis_is_bayes_rule_by_hand(mixtures):
    densities, generator = mixtures
    classifier = pyrogen.BayesClassifier(densities, prior=[0.25, 0.75]).double()  # and them
    points = torch.randn(50, 2, generator=generator, dtype=F64) * 3
    table = np.stack([_by_hand(d, points.numpy()) for d in densities], 1) + np.log(
        [0.25, 0.75]
    )  # float32-exact priors
    expected = np.exp(table - np.logaddexp.reduce(table, axis=1, keepdims=True))
    np.testing.assert_allclose(classifier.predict_proba(points), expected, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(classifier.log_prob(points), np.logaddexp.reduce(table, axis=1))


def test_it_classifies_what_no_linear_rule_can_and_rejects_far_inputs(mixtures):
    densities, generator = mixtures
    classifier = pyrogen.BayesClassifier(densities)
    x, y = _two_ring_classes(400, generator)
    assert float((classifier.predict(x) == y).double().mean()) > 0.95
    far = torch.tensor([[30.0, 0.5]], dtype=F64)  # confidently class 0, yet far from the data
    assert float(classifier.predict_proba(far).max()) > 0.99
    threshold = float(classifier.log_prob(x).min())
    assert classifier.predict(far, min_log_prob=threshold).tolist() == [-1]
    assert (classifier.predict(x, min_log_prob=threshold) >= 0).all()


def test_samples_pairs_from_the_prior_and_the_densities(mixtures):
    densities, _ = mixtures
    classifier = pyrogen.BayesClassifier(densities, prior=[0.25, 0.75])
    torch.manual_seed(0)
    x, y = classifier.sample(4000, return_labels=True)
    assert x.shape == (4000, 2)
    assert float(y.double().mean()) == pytest.approx(0.75, abs=0.03)
    assert float((classifier.predict(x) == y).double().mean()) > 0.95


def test_one_conditional_density_is_the_same_rule():
    generator = torch.Generator().manual_seed(1)
    flow = pyrogen.FlowDensity((2,), "maf", num_classes=3, transforms=1, hidden=(8,))
    x = torch.randn(30, 2, generator=generator)
    pyrogen.fit(flow, x, torch.arange(30) % 3, steps=5, progress=False)
    classifier = pyrogen.BayesClassifier(flow)
    table = torch.stack([flow.log_prob(x, torch.full((30,), k)) for k in range(3)], 1)
    torch.testing.assert_close(classifier.class_log_likelihoods(x), table.detach())
    assert classifier.sample(5).shape == (5, 2)


def test_bad_arguments_are_named(mixtures):
    densities, _ = mixtures
    with pytest.raises(ValueError, match=r"prior: expected 2 positive class probabilities"):
        pyrogen.BayesClassifier(densities, prior=[1.0, 0.0])
    with pytest.raises(ValueError, match=r"densities: expected at least two pyrogen models"):
        pyrogen.BayesClassifier(densities[:1])
    with pytest.raises(ValueError, match=r"not conditioned on labels"):
        pyrogen.BayesClassifier(densities[0])
