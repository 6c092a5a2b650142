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
    image_shape,
    plot_clusters,
    plot_elbo,
    plot_energy_landscape,
    plot_image_grid,
    plot_latent,
    plot_reconstructions,
    plot_weights_posterior,
    to_inference_data,
)
from pyrogen.diagnostics.image_plots import plot_class_samples, plot_completions
from pyrogen.models.conditional_vae import observed_mask

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
    model = pyrogen.GaussianMixture(2, "full")
    pyrogen.fit(model, two_clusters, steps=5, progress=False)
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


def test_plot_elbo_of_a_fit_that_starts_converged_is_drawn_flat():
    # Three steps changing the loss by 1e-4 nats per example, as a MAP mixture polished
    # from its EM start: points on an axis at least 0.01 wide, titled with the value.
    losses = [4.25874, 4.25889, 4.25875]
    ax = plot_elbo(losses)
    low, high = ax.get_ylim()
    assert high - low >= 0.01
    assert ax.get_lines()[0].get_marker() == "o"
    assert "converged: 4.2588 at step 3" in ax.get_title()
    # A real curve keeps its own axis and no such title.
    curve = plot_elbo([5.0, 4.6, 4.4, 4.3])
    assert "converged" not in curve.get_title()
    assert curve.get_ylim()[0] > 4.2 and curve.get_ylim()[1] < 5.1


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
    assert ax.get_title() == "point estimate of the weights (no posterior spread)"
    assert "posterior of the weights (50 draws)" in plot_weights_posterior(idata).get_title()
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


# --- image models -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("shape", "drawn"),
    [
        ((784,), (28, 28)),
        ((28, 28), (28, 28)),
        ((1, 28, 28), (28, 28)),
        ((3, 8, 8), (3, 8, 8)),
        ((5,), None),
        ((9,), None),  # 3 x 3: more likely a table's columns than an image
        ((2, 8, 8), None),
        ((1, 2, 8, 8), None),
    ],
)
def test_image_shape(shape, drawn):
    assert image_shape(shape) == drawn


def test_image_grid_tiles_row_by_row_with_separators():
    images = torch.arange(6, dtype=torch.float32).reshape(6, 1, 1).expand(6, 2, 3) / 10
    ax = plot_image_grid(images.reshape(6, 6), shape=(2, 3), ncols=4)
    canvas = ax.images[0].get_array()
    assert canvas.shape == (2 * 2 + 1, 4 * 3 + 3)  # 2 rows of 4 images, 1-pixel separators
    assert float(canvas[0, 0]) == 0.0 and float(canvas[0, 4]) == pytest.approx(0.1)
    assert float(canvas[3, 0]) == pytest.approx(0.4)  # the fifth image starts row two
    assert canvas.mask[2].all() and canvas.mask[:, 3].all()  # separators: masked (NaN)
    assert canvas.mask[3:, 8:].all()  # no images after the sixth
    assert not ax.axison
    assert ax.images[0].get_clim() == (0.0, 1.0)


def test_image_grid_rescales_values_outside_the_unit_interval_and_draws_rgb():
    ax = plot_image_grid(torch.linspace(-2, 6, 4 * 16).reshape(4, 16))
    canvas = ax.images[0].get_array()
    assert float(canvas.min()) == 0.0 and float(canvas.max()) == 1.0
    rgb = plot_image_grid(torch.rand(4, 3, 5, 5)).images[0].get_array()
    assert rgb.shape == (11, 11, 3)


def test_image_grid_bad_input():
    with pytest.raises(ValueError, match=r"images: expected examples that are images .* \(5,\)"):
        plot_image_grid(torch.rand(4, 5))
    with pytest.raises(ValueError, match=r"images: expected .* matching shape \(3, 3\)"):
        plot_image_grid(torch.rand(4, 16), shape=(3, 3))
    with pytest.raises(ValueError, match="ncols: expected a positive integer, got 0"):
        plot_image_grid(torch.rand(4, 16), ncols=0)


def _vae(latent_dim: int = 2) -> pyrogen.VAE:
    torch.manual_seed(0)
    return pyrogen.VAE((16,), latent_dim=latent_dim, hidden=(8,))


def test_reconstructions_are_drawn_under_the_data():
    vae = _vae()
    x = torch.rand(10, 16, generator=torch.Generator().manual_seed(1))
    canvas = plot_reconstructions(vae, x, n=3).images[0].get_array()
    assert canvas.shape == (2 * 4 + 1, 3 * 4 + 2)
    np.testing.assert_allclose(canvas[:4, :4], x[0].reshape(4, 4).numpy(), rtol=1e-6)
    expected = vae.reconstruct(x[:1])[0].reshape(4, 4).numpy()
    np.testing.assert_allclose(canvas[5:, :4], expected, rtol=1e-6)
    with pytest.raises(TypeError, match="model: expected an autoencoder with reconstruct"):
        plot_reconstructions(pyrogen.GaussianMixture(2), x)
    with pytest.raises(ValueError, match="n: expected a positive integer, got 0"):
        plot_reconstructions(vae, x, n=0)


def test_latent_two_dimensions_are_the_posterior_means_coloured_by_label():
    vae = _vae()
    x = torch.rand(30, 16, generator=torch.Generator().manual_seed(1))
    labels = torch.arange(30) % 3
    ax = plot_latent(vae, x, labels)
    loc, _ = vae.encode(x)
    points = np.concatenate([c.get_offsets() for c in ax.collections])
    expected = np.concatenate([loc[labels == k].numpy() for k in range(3)])
    np.testing.assert_allclose(points, expected, rtol=1e-5)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["0", "1", "2"]
    assert ax.get_xlabel() == "z[0] (posterior mean)"


def test_latent_with_more_dimensions_shows_principal_components():
    vae = _vae(latent_dim=5)
    x = torch.rand(40, 16, generator=torch.Generator().manual_seed(1))
    ax = plot_latent(vae, x)
    points = ax.collections[0].get_offsets()
    loc, _ = vae.encode(x)
    centred = (loc - loc.mean(0)).double().numpy()
    # Projections on the first two principal components: uncorrelated, and their variances
    # are the two largest eigenvalues of the covariance of the means.
    eigenvalues = np.linalg.eigvalsh(np.cov(centred.T))[::-1]
    np.testing.assert_allclose(np.var(points, axis=0, ddof=1), eigenvalues[:2], rtol=1e-6)
    assert abs(np.corrcoef(points.T)[0, 1]) < 1e-6
    assert ax.get_xlabel().startswith("PC1 (") and "first 2 principal components" in ax.get_title()
    many = plot_latent(vae, x, labels=np.arange(40))  # > 10 classes: a colour bar
    assert len(many.figure.axes) == 2


def test_latent_with_one_dimension_is_a_histogram_and_checks_labels():
    vae = _vae(latent_dim=1)
    x = torch.rand(20, 16)
    ax = plot_latent(vae, x, labels=torch.arange(20) % 2)
    assert ax.get_xlabel() == "z (posterior mean)" and len(ax.patches) > 0
    with pytest.raises(ValueError, match="labels: expected 20 labels, got 3"):
        plot_latent(vae, x, labels=[0, 1, 2])
    with pytest.raises(TypeError, match="model: expected a model with encode"):
        plot_latent(pyrogen.GaussianMixture(2), x)


def test_image_grid_names_its_rows():
    ax = plot_image_grid(torch.rand(6, 16), ncols=3, row_labels=["a", "b"])
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b"]
    np.testing.assert_allclose(ax.get_yticks(), [1.5, 6.5])  # the middle of each 4-pixel row
    assert not ax.get_xticks().size
    with pytest.raises(ValueError, match="row_labels: expected 2 names, one per row, got 1"):
        plot_image_grid(torch.rand(6, 16), ncols=3, row_labels=["a"])


# --- the VAE variants -------------------------------------------------------------------
def _variant(cls, **options):
    torch.manual_seed(0)
    return cls((16,), latent_dim=2, hidden=(8,), **options)


def test_completions_show_the_data_its_given_part_and_the_completion():
    cvae = _variant(pyrogen.ConditionalVAE, observed="top")
    x = torch.rand(10, 16, generator=torch.Generator().manual_seed(1))
    given = observed_mask("top", (16,))
    ax = plot_completions(cvae, x, given=given, n=3)
    canvas = ax.images[0].get_array()
    assert canvas.shape == (3 * 4 + 2, 3 * 4 + 2)  # data, given part, completion
    first = x[0].reshape(4, 4).numpy()
    np.testing.assert_allclose(canvas[:4, :4], first, rtol=1e-6)
    np.testing.assert_allclose(canvas[5:7, :4], first[:2], rtol=1e-6)  # the given top half
    assert canvas.mask[7:9, :4].all()  # the missing half: drawn like the separators
    np.testing.assert_allclose(canvas[10:12, :4], first[:2], rtol=1e-6)  # kept in the completion
    assert not canvas.mask[12:14, :4].any()
    assert [t.get_text() for t in ax.get_yticklabels()] == ["data", "given", "completed"]
    with pytest.raises(TypeError, match="model: expected a model with complete"):
        plot_completions(_vae(), x, given=given)
    with pytest.raises(ValueError, match=r"given: expected a mask of shape \(16,\)"):
        plot_completions(cvae, x, given=torch.ones(4, 4, dtype=torch.bool))


def test_class_samples_have_one_row_per_class_or_component():
    ssvae = _variant(pyrogen.SemiSupervisedVAE, num_classes=3)
    torch.manual_seed(5)
    ax = plot_class_samples(ssvae, per_row=2)
    torch.manual_seed(5)
    expected = ssvae.sample(6, torch.tensor([0, 0, 1, 1, 2, 2]), mean=True)
    canvas = ax.images[0].get_array()
    assert canvas.shape == (3 * 4 + 2, 2 * 4 + 1)
    np.testing.assert_allclose(canvas[5:9, 5:9], expected[3].reshape(4, 4).numpy(), rtol=1e-5)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["0", "1", "2"]
    assert "one row per class" in ax.get_title()

    gmvae = _variant(pyrogen.GaussianMixtureVAE, n_components=2)
    ax = plot_class_samples(gmvae, per_row=3)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["0 (0.50)", "1 (0.50)"]
    assert "one row per component (its weight)" in ax.get_title()

    # Given values: every row completes the same examples, under its own label.
    cvae = _variant(pyrogen.ConditionalVAE, num_classes=2, observed="left")
    observed = torch.rand(3, 16)
    canvas = plot_class_samples(cvae, per_row=3, observed=observed).images[0].get_array()
    for row in range(2):
        top = row * 5
        np.testing.assert_allclose(
            canvas[top : top + 4, 5:7], observed[1].reshape(4, 4)[:, :2].numpy(), rtol=1e-6
        )
    with pytest.raises(TypeError, match="model: expected a model with num_classes or n_comp"):
        plot_class_samples(_vae())
    with pytest.raises(ValueError, match="observed: expected None for a SemiSupervisedVAE"):
        plot_class_samples(ssvae, per_row=3, observed=observed)
    with pytest.raises(ValueError, match="observed: expected 3 examples, got 2"):
        plot_class_samples(cvae, per_row=3, observed=observed[:2])


def test_reconstructions_and_latent_of_a_model_conditioned_on_labels():
    cvae = _variant(pyrogen.ConditionalVAE, num_classes=3)
    x = torch.rand(12, 16, generator=torch.Generator().manual_seed(1))
    y = torch.arange(12) % 3
    canvas = plot_reconstructions(cvae, x, n=2, y=y).images[0].get_array()
    expected = cvae.reconstruct(x[:1], y[:1])[0].reshape(4, 4).numpy()
    np.testing.assert_allclose(canvas[5:, :4], expected, rtol=1e-5)
    ax = plot_latent(cvae, x, labels=y, y=y)
    loc, _ = cvae.encode(x, y)
    points = np.concatenate([c.get_offsets() for c in ax.collections])
    expected = np.concatenate([loc[y == k].numpy() for k in range(3)])
    np.testing.assert_allclose(points, expected, rtol=1e-5)


def test_energy_landscape_is_the_normalized_log_density_over_the_data(two_clusters):
    ebm = pyrogen.EnergyDensity(2, hidden=(8,))
    pyrogen.fit(ebm, two_clusters, steps=3, progress=False)
    ax = plot_energy_landscape(ebm, two_clusters, points=30, feature_names=["a", "b"])
    assert ax.get_title() == "log p(x) = -E(x) - log Z, log Z by quadrature"
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("a", "b")
    # The grid spans the data's range and 15% more on each side; its highest level is the
    # largest log-density on that grid.
    low, high = two_clusters.min(0).values, two_clusters.max(0).values
    pad = 0.15 * (high - low)
    axes = [
        torch.linspace(float(a), float(b), 30) for a, b in zip(low - pad, high + pad, strict=True)
    ]
    top = ebm.log_prob(torch.cartesian_prod(*axes)).max()
    assert max(ax.collections[0].levels) == pytest.approx(float(top), rel=1e-5)
    assert ax.collections[-1].get_offsets().shape == two_clusters.shape  # the rows on top
    plt.close(ax.figure)
    with pytest.raises(TypeError, match="model: expected an energy model"):
        plot_energy_landscape(pyrogen.GaussianMixture(2), two_clusters)
    with pytest.raises(ValueError, match="x: expected 2 features for an energy landscape"):
        plot_energy_landscape(ebm, torch.zeros(4, 3))
