"""to_inference_data: groups, shapes and dims for SVI and MCMC posteriors, and the exact
pointwise log-likelihood ArviZ's LOO is computed from."""

from __future__ import annotations

import warnings

import arviz
import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from scipy.stats import norm

import pyrogen
from pyrogen.diagnostics import to_inference_data
from pyrogen.infer import mixture_nuts

COVARIANCES = ("full", "diag", "spherical", "tied")


def fitted(model, x, **options):
    """``model`` after ``pyrogen.fit(model, x, **options)``."""
    pyrogen.fit(model, x, **options)
    return model


def _loo(idata: arviz.InferenceData) -> arviz.ELPDData:
    # Few, (for MAP) identical draws make PSIS warn about its Pareto k; the warning is
    # expected here, the point is that LOO runs on what we built.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return arviz.loo(idata, pointwise=True)


def test_map_fit_result(fit_gmm, two_clusters):
    model, result = fit_gmm("full", "map")
    idata = to_inference_data(result, two_clusters, num_samples=20)

    assert set(idata.groups()) == {"posterior", "log_likelihood", "observed_data"}
    posterior = idata.posterior
    assert posterior["weights"].dims == ("chain", "draw", "component")
    assert posterior["weights"].shape == (1, 20, 2)
    assert posterior["locs"].shape == (1, 20, 2, 2)
    assert posterior["locs"].dims[:3] == ("chain", "draw", "component")
    assert posterior["corr_cholesky"].shape == (1, 20, 2, 2, 2)
    assert posterior["covariance"].shape == (1, 20, 2, 2, 2)
    np.testing.assert_allclose(posterior["covariance"][0, 0], model.covariances_, rtol=1e-6)
    assert idata.log_likelihood["obs"].dims == ("chain", "draw", "row")
    assert idata.observed_data["obs"].dims == ("row", "feature")
    np.testing.assert_array_equal(idata.observed_data["obs"], two_clusters.numpy())
    # A MAP guide is a Delta: every draw is the point estimate.
    expected = model.log_prob(two_clusters).double().numpy()
    np.testing.assert_allclose(idata.log_likelihood["obs"][0, 7], expected, rtol=1e-6)
    loo = _loo(idata)
    assert loo.elpd_loo == pytest.approx(expected.sum(), rel=1e-6)
    assert idata.posterior.attrs["pyrogen_family"] == "gmm"


def test_variational_model_source_with_posterior_predictive(fit_gmm, two_clusters):
    model, result = fit_gmm("diag", "variational", steps=20)
    idata = to_inference_data(model, two_clusters, num_samples=40, posterior_predictive=True)

    assert {"posterior", "log_likelihood", "observed_data", "posterior_predictive"} <= set(
        idata.groups()
    )
    weights = idata.posterior["weights"].values
    assert weights.shape == (1, 40, 2)
    assert weights.std(axis=1).min() > 0  # a real posterior, not a point
    np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-5)
    predictive = idata.posterior_predictive["obs"]
    assert predictive.dims == ("chain", "draw", "row", "feature")
    assert predictive.shape == (1, 40, 60, 2)
    assert np.isfinite(_loo(idata).elpd_loo)
    # The FitResult and the model give the same draws for the same seed; another seed differs.
    again = to_inference_data(result, two_clusters, num_samples=40, posterior_predictive=True)
    np.testing.assert_array_equal(again.posterior["locs"], idata.posterior["locs"])
    np.testing.assert_array_equal(again.posterior_predictive["obs"], predictive)
    other = to_inference_data(model, two_clusters, num_samples=40, seed=1)
    assert not np.array_equal(other.posterior["locs"], idata.posterior["locs"])


def test_mcmc_draws(two_clusters):
    model = fitted(pyrogen.GaussianMixture(2, "diag"), two_clusters, steps=30, progress=False)
    idata = mixture_nuts(model, two_clusters, num_samples=20, warmup=20, num_chains=2)

    assert {"posterior", "log_likelihood", "observed_data", "sample_stats"} <= set(idata.groups())
    assert idata.posterior["locs"].shape == (2, 20, 2, 2)
    assert idata.posterior["scales"].dims[:3] == ("chain", "draw", "component")
    assert idata.sample_stats["diverging"].shape == (2, 20)
    assert idata.log_likelihood["obs"].shape == (2, 20, 60)
    assert idata.posterior.attrs["posterior_from"] == "draws"
    assert np.isfinite(_loo(idata).elpd_loo)


def test_pointwise_log_likelihood_is_exact_draw_by_draw(two_clusters):
    # Hand-made draws of a diagonal mixture, different in every (chain, draw), checked
    # against scipy: catches both a wrong density and a (chain, draw) mix-up in reshaping.
    model = fitted(pyrogen.GaussianMixture(2, "diag"), two_clusters, steps=5, progress=False)
    chains, per_chain = 2, 3
    shift = torch.arange(chains * per_chain, dtype=torch.float32).reshape(chains, per_chain)
    base = model.point_estimates()
    draws = {
        "weights": torch.stack([torch.tensor([0.3, 0.7]), torch.tensor([0.6, 0.4])])[:, None]
        .expand(chains, per_chain, 2)
        .contiguous(),
        "locs": base["locs"] + 0.1 * shift[..., None, None],
        "scales": base["scales"] * (1 + 0.05 * shift[..., None, None]),
    }
    idata = to_inference_data(draws, two_clusters, model=model)

    x = two_clusters.double().numpy()
    for c in range(chains):
        for d in range(per_chain):
            w, mu, sd = (
                draws[name][c, d].double().numpy() for name in ("weights", "locs", "scales")
            )
            per_component = norm.logpdf(x[:, None, :], mu, sd).sum(-1) + np.log(w)
            expected = logsumexp(per_component, axis=1)
            np.testing.assert_allclose(idata.log_likelihood["obs"][c, d], expected, rtol=1e-5)
    # All draws at the point estimates: exactly model.log_prob, in every cell.
    at_point = {name: value.expand(chains, per_chain, *value.shape) for name, value in base.items()}
    idata = to_inference_data(
        at_point, two_clusters, model=model, sample_stats={"lp": np.zeros((2, 3))}
    )
    expected = model.log_prob(two_clusters).double().numpy()
    np.testing.assert_allclose(
        idata.log_likelihood["obs"].values, np.broadcast_to(expected, (2, 3, 60)), rtol=1e-6
    )
    assert idata.sample_stats["lp"].shape == (2, 3)


@pytest.mark.parametrize("covariance", COVARIANCES)
def test_covariance_variable_and_component_dims(covariance, two_clusters):
    # D == K == 2 on purpose: a tied covariance's sites have 2 entries too, yet are shared
    # by the components and must not get the "component" dim.
    model = fitted(pyrogen.GaussianMixture(2, covariance), two_clusters, steps=5, progress=False)
    idata = to_inference_data(model, two_clusters, num_samples=3)
    posterior = idata.posterior
    np.testing.assert_allclose(posterior["covariance"][0, 1], model.covariances_, rtol=1e-6)
    tied = covariance == "tied"
    assert ("component" in posterior["covariance"].dims) is not tied
    assert ("component" in posterior["scales"].dims) is not tied
    assert posterior["weights"].dims == ("chain", "draw", "component")
    assert posterior["locs"].dims[2] == "component"


def test_bad_input(fit_gmm, two_clusters):
    model, result = fit_gmm("diag", "map", steps=5)
    draws = {
        name: value.expand(1, 4, *value.shape) for name, value in model.point_estimates().items()
    }
    with pytest.raises(ValueError, match="data: expected the"):
        to_inference_data(result)
    with pytest.raises(ValueError, match="model: expected the GenerativeModel"):
        to_inference_data(draws, two_clusters)
    flat = {name: value[0] for name, value in draws.items()}
    with pytest.raises(
        ValueError, match=r"source\['\w+'\]: expected draws of shape .*add a chain dim"
    ):
        to_inference_data(flat, two_clusters, model=model)
    with pytest.raises(
        ValueError, match=r"expected draws of every latent site .* none for \['weights'\]"
    ):
        to_inference_data(
            {k: v for k, v in draws.items() if k != "weights"}, two_clusters, model=model
        )
    with pytest.raises(
        ValueError, match=r"sample_stats\['diverging'\]: expected shape \(1, 4, ...\)"
    ):
        to_inference_data(draws, two_clusters, model=model, sample_stats={"diverging": np.zeros(4)})
    with pytest.raises(
        TypeError, match="source: expected a dict of draws, a FitResult or a fitted"
    ):
        to_inference_data([1, 2], two_clusters)
    with pytest.raises(ValueError, match="model: expected a fitted model"):
        to_inference_data(pyrogen.GaussianMixture(2), two_clusters)
    with pytest.raises(ValueError, match="num_samples: expected a positive integer, got 0"):
        to_inference_data(model, two_clusters, num_samples=0)
    with pytest.raises(ValueError, match="x: expected 2 columns, got 3"):
        to_inference_data(model, torch.zeros(5, 3))


@pytest.mark.parametrize(
    "make",
    [
        lambda: pyrogen.VAE((2,), latent_dim=2, likelihood="gaussian", hidden=(8,)),
        lambda: pyrogen.FlowDensity((2,), transforms=1, hidden=(8,)),
    ],
    ids=["vae", "flow"],
)
def test_families_without_global_latents_are_named(make, two_clusters):
    result = pyrogen.fit(make(), two_clusters, steps=2, progress=False)
    with pytest.raises(ValueError, match="source: expected a model with global latent sites"):
        to_inference_data(result, two_clusters)
    with pytest.raises(ValueError, match="got a (VAE|FlowDensity), whose latents are per row"):
        to_inference_data({}, two_clusters, model=result.model)


def test_from_pyro_is_at_the_top_level():
    from pyrogen.diagnostics import from_pyro

    assert pyrogen.from_pyro is from_pyro and "from_pyro" in pyrogen.__all__
