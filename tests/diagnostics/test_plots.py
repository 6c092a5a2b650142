"""Plots: each returns its Axes, and the covariance ellipses have the right geometry."""

from __future__ import annotations

import math

import arviz
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.axes import Axes
from matplotlib.patches import Ellipse

import pyrogen
from pyrogen.diagnostics import (
    plot_clusters,
    plot_elbo,
    plot_weights_posterior,
    to_inference_data,
)

WEIGHTS = torch.tensor([0.4, 0.6])
MEANS = torch.tensor([[-4.0, 0.0, 1.0], [4.0, 2.0, -1.0]])
# Per covariance type, covariances with known marginals over features (0, 2):
# standard deviations (2, 1) for the first component and (1, 3) for the second.
COVARIANCES = {
    "diag": torch.tensor([[4.0, 0.5, 1.0], [1.0, 0.5, 9.0]]),
    "full": torch.stack(
        [
            torch.tensor([[4.0, 0.3, 0.0], [0.3, 0.5, 0.0], [0.0, 0.0, 1.0]]),
            torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.5, 0.2], [0.0, 0.2, 9.0]]),
        ]
    ),
    "tied": torch.tensor([[4.0, 0.3, 0.0], [0.3, 0.5, 0.0], [0.0, 0.0, 1.0]]),
    "spherical": torch.tensor([4.0, 9.0]),
}
# Expected (width, height) / (2 n_std) per component over features (0, 2): major then minor sd.
AXES_SD = {
    "diag": [(2.0, 1.0), (3.0, 1.0)],
    "full": [(2.0, 1.0), (3.0, 1.0)],
    "tied": [(2.0, 1.0), (2.0, 1.0)],
    "spherical": [(2.0, 2.0), (3.0, 3.0)],
}


def _mixture(covariance: str) -> pyrogen.GaussianMixture:
    model = pyrogen.GaussianMixture(2, covariance)
    return model.set_parameters(WEIGHTS, MEANS, COVARIANCES[covariance])


def _data() -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.cat(
        [
            MEANS[0] + torch.randn(20, 3, generator=generator),
            MEANS[1] + torch.randn(30, 3, generator=generator),
        ]
    )


@pytest.mark.parametrize("covariance", sorted(COVARIANCES))
def test_cluster_ellipses_are_the_marginal_covariances(covariance):
    n_std = 1.5
    fig, ax = plt.subplots()
    returned = plot_clusters(
        _mixture(covariance), _data(), ax, dims=(0, 2), n_std=n_std, feature_names=["a", "b", "c"]
    )
    assert returned is ax
    ellipses = [patch for patch in ax.patches if isinstance(patch, Ellipse)]
    assert len(ellipses) == 2
    for k, (ellipse, (major, minor)) in enumerate(zip(ellipses, AXES_SD[covariance], strict=True)):
        assert ellipse.center == pytest.approx(MEANS[k, [0, 2]].tolist())
        assert ellipse.width == pytest.approx(2 * n_std * major, rel=1e-6)
        assert ellipse.height == pytest.approx(2 * n_std * minor, rel=1e-6)
        if major != minor:
            # The major axis lies along feature 0 for the first component, feature 2 for the
            # second (except tied, shared by both).
            along_first = k == 0 or covariance == "tied"
            expected_angle = 0.0 if along_first else 90.0
            assert math.isclose(ellipse.angle % 180, expected_angle, abs_tol=1e-6) or (
                expected_angle == 0.0 and math.isclose(ellipse.angle % 180, 180, abs_tol=1e-6)
            )
    assert ax.get_xlabel() == "a" and ax.get_ylabel() == "c"
    assert len(ax.collections[0].get_offsets()) == 50  # every row is drawn


def test_clusters_on_a_fitted_model_and_new_axes(two_clusters):
    model = pyrogen.GaussianMixture(2, "full").fit(two_clusters, steps=5, progress=False)
    ax = plot_clusters(model, two_clusters)
    assert isinstance(ax, Axes)
    colours = ax.collections[0].get_facecolors()
    assert len({tuple(c) for c in colours}) == 2  # the two clusters get two colours


def test_clusters_bad_input():
    model = _mixture("diag")
    x = _data()
    with pytest.raises(
        ValueError, match=r"dims: expected two different indices in \[0, 3\), got \(0, 3\)"
    ):
        plot_clusters(model, x, dims=(0, 3))
    with pytest.raises(ValueError, match=r"dims: expected two different indices"):
        plot_clusters(model, x, dims=(1, 1))
    with pytest.raises(ValueError, match="dims: expected two feature indices, got 0"):
        plot_clusters(model, x, dims=0)
    with pytest.raises(ValueError, match="n_std: expected a positive number, got 0"):
        plot_clusters(model, x, n_std=0)
    with pytest.raises(ValueError, match="feature_names: expected 3 names, got 2"):
        plot_clusters(model, x, feature_names=["a", "b"])
    one_feature = pyrogen.GaussianMixture(1, "diag").set_parameters(
        torch.ones(1), torch.zeros(1, 1), torch.ones(1, 1)
    )
    with pytest.raises(ValueError, match="x: expected at least 2 features to plot, got 1"):
        plot_clusters(one_feature, torch.zeros(4, 1))
    with pytest.raises(TypeError, match="model: expected a mixture"):
        plot_clusters(object(), x)


def test_plot_elbo_from_a_fit_result(fit_gmm):
    _, result = fit_gmm("diag", "variational", steps=25)
    fig, ax = plt.subplots()
    assert plot_elbo(result, ax) is ax
    lines = ax.get_lines()
    np.testing.assert_allclose(lines[0].get_ydata(), result.losses)
    best = [line for line in lines if line.get_marker() == "*"][0]
    assert best.get_xdata()[0] == result.best_step
    assert best.get_ydata()[0] == pytest.approx(result.best_loss)
    assert "TraceEnum_ELBO" in ax.get_title()
    assert ax.get_yscale() == "linear"


def test_plot_elbo_from_losses_has_running_mean_and_log_scale():
    losses = list(1000.0 * np.exp(-np.linspace(0, 5, 400)) + 1.0)
    ax = plot_elbo(losses)
    labels = [line.get_label() for line in ax.get_lines()]
    assert any(label.startswith("running mean (8 steps)") for label in labels)
    assert ax.get_yscale() == "log"  # positive and spanning > 10x
    assert plot_elbo(losses, log_scale=False).get_yscale() == "linear"
    with pytest.raises(ValueError, match="result_or_losses: expected at least one loss, got none"):
        plot_elbo([])
    with pytest.raises(ValueError, match="expected finite losses, got nan at step 1"):
        plot_elbo([1.0, float("nan")])
    with pytest.raises(TypeError, match="result_or_losses: expected a FitResult or a sequence"):
        plot_elbo(["a"])


def test_plot_weights_posterior(fit_gmm, two_clusters):
    model, result = fit_gmm("diag", "variational", steps=10)
    idata = to_inference_data(result, two_clusters, num_samples=50)
    fig, ax = plt.subplots()
    assert plot_weights_posterior(idata, ax) is ax
    assert len(ax.patches) == 2  # one filled histogram per component
    # A MAP posterior is a point: drawn as vertical lines.
    map_model, _ = fit_gmm("diag", "map", steps=5)
    ax = plot_weights_posterior(to_inference_data(map_model, two_clusters, num_samples=5))
    assert len(ax.get_lines()) == 2
    with pytest.raises(ValueError, match=r"idata: expected a posterior group with a 'weights'"):
        plot_weights_posterior(arviz.from_dict(posterior={"a": np.zeros((1, 3))}))


@pytest.mark.filterwarnings("ignore:infer_discrete found no sample sites")
def test_clusters_with_a_single_component():
    model = pyrogen.GaussianMixture(1, "full").set_parameters(
        torch.ones(1), MEANS[:1], torch.eye(3)[None]
    )
    ax = plot_clusters(model, _data())
    assert len(ax.collections[0].get_offsets()) == 50
    assert len([p for p in ax.patches if isinstance(p, Ellipse)]) == 1
