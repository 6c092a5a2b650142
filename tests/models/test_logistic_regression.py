"""Bayesian logistic regression against scikit-learn, Pyro's own inference, and its
discriminative contract."""

from __future__ import annotations

import math

import arviz
import numpy as np
import pyro
import pytest
import torch
from pyro.infer import MCMC, NUTS, SVI, Trace_ELBO
from pyro.infer.autoguide import AutoNormal
from sklearn.datasets import load_breast_cancer, load_iris
from sklearn.linear_model import LogisticRegression as ScikitLogisticRegression
from sklearn.preprocessing import StandardScaler

import pyrogen
from pyrogen.diagnostics import score

F64 = torch.float64


def _cancer():
    x, y = load_breast_cancer(return_X_y=True)
    return StandardScaler().fit_transform(x)[:300], y[:300]


# scikit-learn stops its L-BFGS at tol; both sides are then within 1e-5 of the same convex
# optimum: probabilities agree to 1e-5, weights to 1e-4 (measured 5e-7 and 4e-6 on iris).
@pytest.mark.parametrize("prior_scale", [1.0, 0.3])
def test_map_is_scikit_learn_with_matched_l2_penalty(prior_scale):
    # three classes: C = s**2, the intercept unpenalized (a flat prior)
    x, y = load_iris(return_X_y=True)
    model = pyrogen.LogisticRegression(3, prior_scale=prior_scale, intercept_prior_scale=None)
    model.setup(torch.as_tensor(x), y)
    reference = ScikitLogisticRegression(C=prior_scale**2, tol=1e-12, max_iter=20000).fit(x, y)
    np.testing.assert_allclose(model.predict_proba(x), reference.predict_proba(x), atol=1e-5)
    np.testing.assert_allclose(model.point_estimates()["weights"].T, reference.coef_, atol=1e-4)


def test_binary_map_is_scikit_learn_with_twice_the_variance():
    # two classes: scikit-learn's one vector is W_1 - W_0, whose prior variance is 2 s**2
    x, y = _cancer()
    model = pyrogen.LogisticRegression(2, prior_scale=0.5, intercept_prior_scale=None)
    model.setup(torch.as_tensor(x), y)
    reference = ScikitLogisticRegression(C=2 * 0.25, tol=1e-12, max_iter=20000).fit(x, y)
    np.testing.assert_allclose(model.predict_proba(x), reference.predict_proba(x), atol=1e-5)
    weights = model.point_estimates()["weights"]
    np.testing.assert_allclose(weights[:, 1] - weights[:, 0], reference.coef_[0], atol=1e-4)


def test_fit_keeps_the_mode_and_the_loss_is_minus_the_log_joint():
    x, y = load_iris(return_X_y=True)
    x = torch.as_tensor(x)
    model = pyrogen.LogisticRegression(3, intercept_prior_scale=10.0)
    result = pyrogen.fit(model, x, y, progress=False)
    assert result.best_step == 0  # the engine's steps find nothing better than the mode
    values = model.point_estimates()
    prior = torch.distributions.Normal(0.0, 1.0).log_prob(values["weights"]).sum()
    prior = prior + torch.distributions.Normal(0.0, 10.0).log_prob(values["bias"]).sum()
    log_joint = model.log_prob(x, y).sum() + prior
    loss = model.loss.loss(model.model, model.guide, x, torch.as_tensor(y))
    assert loss == pytest.approx(-float(log_joint), rel=1e-6)  # float32, as fit stores it


def test_variational_guide_agrees_with_autonormal_on_the_same_model():
    # The family's own mean-field guide and Pyro's AutoNormal on its model: one family of
    # guides, so the same optimum up to SVI noise (measured up to 0.11 apart on the weights,
    # whose posterior sd is about 0.3 here).
    x, y = _cancer()
    x, y = torch.as_tensor(x[:, :3]), torch.as_tensor(y)
    model = pyrogen.LogisticRegression(2, inference="variational")
    pyrogen.fit(model, x, y, steps=600, lr=0.05, seed=0, progress=False)
    pyro.set_rng_seed(0)
    guide = AutoNormal(model.model)
    svi = SVI(model.model, guide, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO())
    for _ in range(600):
        svi.step(x, y)
    for name in ("weights", "bias"):
        ours = model.point_estimates()[name]
        torch.testing.assert_close(ours, guide.median()[name].detach(), atol=0.2, rtol=0)


# 30 draws leave PSIS's Pareto k above 0.32 on some rows; here only that loo runs matters.
@pytest.mark.filterwarnings("ignore:Estimated shape parameter of Pareto")
def test_nuts_runs_on_the_model_and_converts_to_inference_data():
    x, y = _cancer()
    x, y = torch.as_tensor(x[:60, :2]), torch.as_tensor(y[:60])
    model = pyrogen.LogisticRegression(2)
    model.setup(x, y)
    pyro.set_rng_seed(0)
    mcmc = MCMC(NUTS(model.model), num_samples=30, warmup_steps=30, disable_progbar=True)
    mcmc.run(x, y)
    draws = {name: value[None] for name, value in mcmc.get_samples().items()}
    idata = pyrogen.to_inference_data(draws, x, model=model, labels=y)
    assert idata.posterior["weights"].dims == ("chain", "draw", "feature", "class")
    assert idata.posterior["bias"].shape == (1, 30, 2)
    # The model observes the labels: they are the observed data, the rows constant data.
    assert idata.log_likelihood["y"].dims == ("chain", "draw", "row")
    np.testing.assert_array_equal(idata.observed_data["y"], y.numpy())
    np.testing.assert_array_equal(idata.constant_data["x"], x.numpy())
    loo = arviz.loo(idata)
    assert np.isfinite(loo.elpd_loo) and loo.n_data_points == 60


def test_pointwise_log_likelihood_is_log_p_y_given_x_by_hand():
    # Two rows, one feature, two classes and two draws, each log-probability by hand.
    x = torch.tensor([[1.0], [-2.0]], dtype=F64)
    y = torch.tensor([1, 0])
    model = pyrogen.LogisticRegression(2, n_features=1).to(F64)
    draws = {
        "weights": torch.tensor([[[0.0, 1.0]], [[0.5, -0.5]]], dtype=F64),  # (S, D, C)
        "bias": torch.tensor([[0.0, 0.0], [0.0, 1.0]], dtype=F64),  # (S, C)
    }

    # log softmax at the label, a = logit of the label, b = the other's
    def log_p(a, b):
        return a - math.log(math.exp(a) + math.exp(b))

    expected = torch.tensor(
        [
            [log_p(1.0, 0.0), log_p(0.0, -2.0)],  # draw 0: logits (0, x)
            [log_p(0.5, 0.5), log_p(-1.0, 2.0)],  # draw 1: logits (0.5 x, -0.5 x + 1)
        ],
        dtype=F64,
    )
    torch.testing.assert_close(model.pointwise_log_likelihood(x, draws, y), expected)
    source = {name: value[None] for name, value in draws.items()}
    idata = pyrogen.to_inference_data(source, x, model=model, labels=y)
    np.testing.assert_allclose(idata.log_likelihood["y"].values[0], expected.numpy())
    with pytest.raises(ValueError, match=r"labels: expected the labels \(2,\) of the data"):
        pyrogen.to_inference_data(source, x, model=model)
    with pytest.raises(ValueError, match=r"posterior_predictive: expected False"):
        pyrogen.to_inference_data(source, x, model=model, labels=y, posterior_predictive=True)
    with pytest.raises(ValueError, match=r"y: expected the labels"):
        model.pointwise_log_likelihood(x, draws)


def test_hierarchical_prior_learns_its_scale():
    x, y = load_iris(return_X_y=True)
    model = pyrogen.LogisticRegression(3, hierarchical=True, inference="variational")
    pyrogen.fit(model, x, y, steps=400, seed=0, progress=False)
    assert float(model.point_estimates()["weight_scale"]) > 0
    assert (model.predict(x).numpy() == y).mean() > 0.9


def test_it_is_discriminative_and_says_so():
    x, y = load_iris(return_X_y=True)
    model = pyrogen.LogisticRegression(3)
    pyrogen.fit(model, x, y, progress=False)
    assert model.likelihood_target == "log p(y | x)"
    assert model.label_count is None and not model.generates_data
    with pytest.raises(ValueError, match=r"discriminative: it models p\(y \| x\) only"):
        model.log_prob(x)
    with pytest.raises(NotImplementedError, match=r"has no p\(x\) to draw x from"):
        model.sample(3)
    with pytest.raises(ValueError, match=r"y: expected the labels"):
        pyrogen.LogisticRegression(3).setup(torch.as_tensor(x))
    stats = score(model, x, labels=y)
    assert stats["quantity"] == "log p(y | x)"
    assert stats["accuracy"] > 0.95
    assert "bits_per_dim" not in stats
    assert model.sample_labels(x).shape == (150,)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match=r"hierarchical: expected inference 'variational'"):
        pyrogen.LogisticRegression(3, hierarchical=True)
    with pytest.raises(ValueError, match=r"intercept_prior_scale: expected a number .* improper"):
        pyrogen.LogisticRegression(3, inference="variational", intercept_prior_scale=None)
    with pytest.raises(ValueError, match=r"prior_scale: expected a positive number"):
        pyrogen.LogisticRegression(3, prior_scale=0)
    with pytest.raises(ValueError, match=r"y: expected labels in 0\.\.2"):
        pyrogen.LogisticRegression(3).setup(torch.zeros(2, 1), torch.tensor([0, 3]))
