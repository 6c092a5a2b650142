"""The mixture workflows above the model: choosing K, and collapsed NUTS from a fit."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch

import pyrogen
from pyrogen.infer import mixture_nuts, select_n_components
from pyrogen.infer.mixtures import MCMC_SAMPLES, NUTS_CHAINS, fit_mixture


def test_select_n_components_picks_two_on_old_faithful():
    best, scores = select_n_components(pyrogen.data.old_faithful(), range(1, 5), progress=False)
    assert best.n_components == 2
    assert min(scores, key=scores.get) == 2


def test_select_n_components_is_the_top_level_one():
    assert pyrogen.select_n_components is select_n_components


def test_select_n_components_passes_constructor_and_fit_options_apart():
    # covariance goes to the constructor and steps to pyrogen.fit; seed to every fit.
    x = pyrogen.data.old_faithful()
    best, scores = select_n_components(
        x, [1, 2], criterion="aic", covariance="diag", steps=3, progress=False
    )
    assert best.covariance == "diag"
    assert sorted(scores) == [1, 2]
    assert scores[best.n_components] == pytest.approx(best.aic(x))
    again, _ = select_n_components(x, [best.n_components], covariance="diag", steps=3)
    assert torch.equal(again.means_, best.means_)  # the same seed gives the same fit


def test_select_n_components_rejects_bad_arguments():
    x = pyrogen.data.old_faithful()
    with pytest.raises(ValueError, match="criterion: expected one of 'bic', 'aic', got 'loo'"):
        select_n_components(x, criterion="loo")
    with pytest.raises(ValueError, match="candidates: expected at least one K <= n_samples=3"):
        select_n_components(x[:3], [4, 5])
    with pytest.raises(TypeError, match="banana"):
        select_n_components(x, [1], banana=1, progress=False)


def test_mixture_nuts_defaults_are_the_documented_cheaper_ones():
    # 2 chains x (500 + 500) iterations took ~13 minutes on Old Faithful; the defaults are
    # 2 x (250 + 250) (about 0.15 s an iteration there, as the docstring says).
    defaults = inspect.signature(mixture_nuts).parameters
    assert MCMC_SAMPLES == 250
    assert (defaults["num_samples"].default, defaults["warmup"].default) == (250, 250)
    assert defaults["num_chains"].default == 2


def test_mixture_nuts_returns_relabelled_draws_from_the_fit():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(-5.0, 1.0, (20, 1)), rng.normal(5.0, 1.0, (40, 1))])
    gmm = pyrogen.GaussianMixture(2, covariance="diag")
    pyrogen.fit(gmm, x, progress=False)
    idata = mixture_nuts(gmm, x, num_samples=20, warmup=20, num_chains=1, seed=3)
    assert {"posterior", "log_likelihood", "observed_data", "sample_stats"} <= set(idata.groups())
    assert idata.posterior["weights"].shape == (1, 20, 2)
    # relabelled against the point estimates: each component stays on its own cluster
    locs = idata.posterior["locs"].values[0, :, :, 0]
    order = np.sign(gmm.means_[:, 0].numpy())
    assert (np.sign(locs) == order).all()


def test_mixture_nuts_sets_up_an_unfitted_model_and_checks_its_arguments():
    x = pyrogen.data.old_faithful()
    gmm = pyrogen.GaussianMixture(1, covariance="spherical")
    idata = mixture_nuts(gmm, x, num_samples=4, warmup=4, num_chains=1)
    assert idata.posterior["locs"].shape == (1, 4, 1, 2)
    with pytest.raises(TypeError, match="model: expected a GaussianMixture, got VAE"):
        mixture_nuts(pyrogen.VAE((4,)), x)
    with pytest.raises(ValueError, match="x: expected 2 columns, got 3"):
        mixture_nuts(gmm, np.zeros((5, 3)))


def test_fit_mixture_chooses_k_by_bic_and_refits_the_chosen_one():
    x = pyrogen.data.old_faithful()
    fitted = fit_mixture(x, steps=5, num_samples=7, progress=False)
    assert fitted.model.n_components == 2 and sorted(fitted.scores) == list(range(1, 9))
    assert min(fitted.scores, key=fitted.scores.get) == 2
    assert fitted.model.bic(x) == pytest.approx(fitted.scores[2], rel=1e-6)  # the same fit
    assert fitted.summary["inference"] == "map"
    assert fitted.summary["selection"] == {
        "criterion": "bic",
        "scores": {str(k): v for k, v in fitted.scores.items()},
    }
    assert 0 < fitted.result.steps <= 5 and fitted.idata.posterior["weights"].shape == (1, 7, 2)


def test_fit_mixture_with_a_given_k_variational():
    x = pyrogen.data.old_faithful()
    fitted = fit_mixture(x, 3, inference="variational", covariance="diag", steps=5,
                         num_samples=4, progress=False)  # fmt: skip
    assert fitted.model.n_components == 3 and fitted.model.covariance == "diag"
    assert fitted.model.inference == "variational" and fitted.scores is None
    assert fitted.summary == {"inference": "variational"}
    assert float(fitted.idata.posterior["weights"].std()) > 0


def test_fit_mixture_nuts_starts_from_the_map_fit():
    x = pyrogen.data.old_faithful()
    fitted = fit_mixture(x, 2, inference="nuts", covariance="diag", steps=5, num_samples=4,
                         warmup=3, progress=False)  # fmt: skip
    assert fitted.model.inference == "map" and fitted.summary["inference"] == "nuts"
    mcmc = fitted.summary["mcmc"]
    assert (mcmc["num_chains"], mcmc["num_samples"], mcmc["warmup"]) == (NUTS_CHAINS, 4, 3)
    assert mcmc["divergences"] == int(fitted.idata.sample_stats["diverging"].sum())
    assert fitted.idata.posterior["locs"].shape == (NUTS_CHAINS, 4, 2, 2)


def test_fit_mixture_rejects_an_unknown_inference():
    with pytest.raises(ValueError, match="inference: expected one of 'map', 'variational', "):
        fit_mixture(pyrogen.data.old_faithful(), 2, inference="hmc")
