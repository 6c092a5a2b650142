"""Collapsed NUTS against a posterior known in closed form."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import pyrogen
from pyrogen.infer import run_nuts


def fitted(model, x, **options):
    """``model`` after ``pyrogen.fit(model, x, **options)``."""
    pyrogen.fit(model, x, **options)
    return model


def test_nuts_weights_posterior_is_the_dirichlet_count_posterior():
    # Two clusters 10 sds apart: every assignment is certain, so with a Dirichlet(1, 1)
    # prior the weight of the small cluster is exactly Beta(1 + 10, 1 + 30) a posteriori,
    # and each mean is close to its cluster average with sd ~ sigma / sqrt(n_k).
    rng = np.random.default_rng(0)
    small, large = rng.normal(-5.0, 1.0, 10), rng.normal(5.0, 1.0, 30)
    x = torch.as_tensor(np.concatenate([small, large])[:, None], dtype=torch.float32)
    model = fitted(pyrogen.GaussianMixture(2, covariance="diag"), x, progress=False)
    draws, stats = run_nuts(
        model,
        x,
        num_samples=300,
        warmup=200,
        num_chains=2,
        seed=1,
        init_values=model.point_estimates(),
    )
    draws = model.relabel(draws)
    assert draws["weights"].shape == (2, 300, 2)
    assert stats["diverging"].shape == (2, 300)
    index = int(model.means_[:, 0].argmin())  # the component sitting on the small cluster
    weight = draws["weights"][..., index].flatten().numpy()
    beta_mean = 11 / 42
    beta_sd = np.sqrt(11 * 31 / (42**2 * 43))
    # ~600 correlated draws: Monte Carlo error of the mean is below 0.1 posterior sd
    assert weight.mean() == pytest.approx(beta_mean, abs=0.3 * beta_sd)
    assert weight.std() == pytest.approx(beta_sd, rel=0.25)
    locs = draws["locs"][..., index, 0].flatten().numpy()
    assert locs.mean() == pytest.approx(small.mean(), abs=0.3 * small.std() / np.sqrt(10) + 0.05)
    assert stats["diverging"].mean() < 0.05


def test_bad_sampler_settings():
    model = pyrogen.GaussianMixture(1, n_features=1)
    x = torch.zeros(5, 1)
    with pytest.raises(ValueError, match="num_samples: expected a positive integer, got 0"):
        run_nuts(model, x, num_samples=0)
    with pytest.raises(ValueError, match="warmup: expected a non-negative integer"):
        run_nuts(model, x, warmup=-1)
