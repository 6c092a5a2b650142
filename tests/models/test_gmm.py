"""GaussianMixture against closed forms and independent references.

References: brute-force sums over every assignment (itertools.product) with scipy densities,
and scikit-learn's GaussianMixture evaluated at the same parameters.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pyro
import pytest
import torch
from pyro import poutine
from scipy.special import logsumexp
from scipy.stats import multivariate_normal
from sklearn.mixture import GaussianMixture as SklearnMixture

import pyrogen
from pyrogen.models.gmm import ASSIGNMENT, OBS, GaussianMixture
from pyrogen.models.mixture_em import (
    COVARIANCE_TYPES,
    GaussianComponents,
    MixtureParameters,
)
from pyrogen.models.mixture_map import MapMStep, covariance_prior_gradient


def fitted(model, x, **options):
    """``model`` after ``pyrogen.fit(model, x, **options)``."""
    pyrogen.fit(model, x, **options)
    return model


def blobs(n: int = 300, seed: int = 0, dim: int = 2) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = np.array([[-4.0] * dim, [0.0] * dim, [4.0] + [-2.0] * (dim - 1)])
    labels = rng.choice(3, size=n, p=[0.5, 0.3, 0.2])
    return centres[labels] + rng.normal(size=(n, dim)) * np.array([0.7, 1.2, 0.5])[labels, None]


def full_covariances(model: GaussianMixture) -> np.ndarray:
    """Each component's (D, D) covariance, whatever the covariance type."""
    params = model.mixture_parameters()
    k, d = model.n_components, model.n_features
    cov = params.covariances.double().numpy()
    if model.covariance == "full":
        return cov
    if model.covariance == "tied":
        return np.broadcast_to(cov, (k, d, d))
    if model.covariance == "diag":
        return np.stack([np.diag(c) for c in cov])
    return np.stack([np.eye(d) * c for c in cov])


def scipy_log_prob(model: GaussianMixture, x: np.ndarray) -> np.ndarray:
    params = model.mixture_parameters()
    weights, means = params.weights.double().numpy(), params.locs.double().numpy()
    covs = full_covariances(model)
    per_component = np.stack(
        [multivariate_normal(means[k], covs[k]).logpdf(x) for k in range(len(weights))], -1
    )
    return logsumexp(per_component + np.log(weights), axis=-1)


def log_prior(model: GaussianMixture, x: torch.Tensor) -> float:
    """log p(theta) at the point estimates, read off a model trace."""
    conditioned = poutine.condition(model.model, data=model.point_estimates())
    trace = poutine.trace(poutine.enum(conditioned, first_available_dim=-2)).get_trace(x)
    trace.compute_log_prob()
    return sum(
        site["log_prob_sum"].item()
        for name, site in trace.nodes.items()
        if site["type"] == "sample" and name not in (ASSIGNMENT, OBS)
    )


@pytest.mark.parametrize("covariance", COVARIANCE_TYPES)
def test_enumerated_elbo_equals_brute_force_sum(covariance):
    x = torch.tensor(blobs(4, seed=1), dtype=torch.float64)
    # k-means only: the identity holds at any parameters, and EM on 4 rows and 3 components
    # would shrink single-row components towards degenerate covariances.
    model = GaussianMixture(3, covariance=covariance, em_iterations=0).double()
    model.setup(x)
    elbo = -model.loss.loss(model.model, model.guide, x)
    # Sum over all 3**4 assignment vectors, one at a time, with scipy densities.
    params = model.mixture_parameters()
    weights, means, covs = params.weights.numpy(), params.locs.numpy(), full_covariances(model)
    dens = [multivariate_normal(means[k], covs[k]) for k in range(3)]
    terms = [
        sum(math.log(weights[k]) + dens[k].logpdf(x[n].numpy()) for n, k in enumerate(z))
        for z in itertools.product(range(3), repeat=4)
    ]
    brute_force = logsumexp(terms) + log_prior(model, x)
    assert elbo == pytest.approx(brute_force, abs=1e-8)
    # log_prob goes through precision factors; single-row clusters have covariances of
    # order 1e-6 whose inversion costs a few digits, hence the looser float64 tolerance.
    assert model.log_prob(x).sum().item() == pytest.approx(logsumexp(terms), abs=1e-5)


@pytest.mark.parametrize("covariance", COVARIANCE_TYPES)
def test_log_prob_equals_sklearn_score_samples(covariance):
    x = blobs(400)
    reference = SklearnMixture(3, covariance_type=covariance, random_state=0).fit(x)
    model = GaussianMixture(3, covariance=covariance, n_features=2).double()
    model.set_parameters(reference.weights_, reference.means_, reference.covariances_)
    np.testing.assert_allclose(model.log_prob(x).numpy(), reference.score_samples(x), atol=1e-9)
    np.testing.assert_allclose(model.log_prob(x).numpy(), scipy_log_prob(model, x), atol=1e-9)
    np.testing.assert_allclose(
        model.predict_proba(x).numpy(), reference.predict_proba(x), atol=1e-9
    )
    assert model.bic(x) == pytest.approx(reference.bic(x), rel=1e-10)
    assert model.aic(x) == pytest.approx(reference.aic(x), rel=1e-10)
    # float32 (the default dtype) agrees to float32 precision
    single = GaussianMixture(3, covariance=covariance, n_features=2)
    single.set_parameters(reference.weights_, reference.means_, reference.covariances_)
    np.testing.assert_allclose(single.log_prob(x).numpy(), reference.score_samples(x), atol=2e-4)


@pytest.mark.parametrize("covariance", COVARIANCE_TYPES)
@pytest.mark.parametrize("inference", ["map", "variational"])
def test_fit_recovers_clusters(covariance, inference):
    x = blobs(600)
    model = GaussianMixture(3, covariance=covariance, inference=inference)
    pyrogen.fit(model, x, steps=100, progress=False)
    means = model.means_.numpy()
    for centre in ([-4.0, -4.0], [0.0, 0.0], [4.0, -2.0]):
        assert np.min(np.linalg.norm(means - centre, axis=1)) < 0.4
    assert sorted(model.weights_.tolist()) == pytest.approx([0.2, 0.3, 0.5], abs=0.06)
    # predict is infer_discrete at temperature 0: the arg-max of the responsibilities
    assert torch.equal(model.predict(x), model.predict_proba(x).argmax(-1))


def test_map_fit_is_at_least_as_good_as_sklearn_on_held_out_data():
    train, test = blobs(2000, seed=3), blobs(2000, seed=4)
    model = fitted(GaussianMixture(3), train, progress=False)
    reference = SklearnMixture(3, random_state=0).fit(train)
    ours = model.log_prob(test).mean().item()
    assert ours >= reference.score(test) - 0.005


def test_n_init_keeps_the_best_start():
    x = blobs(300, seed=5)
    single = GaussianMixture(3, n_init=1, em_iterations=0)
    single.setup(x, seed=11)
    several = GaussianMixture(3, n_init=6, em_iterations=0)
    several.setup(x, seed=11)
    xt = torch.as_tensor(x, dtype=torch.float32)
    assert (
        several.loss.loss(several.model, several.guide, xt)
        <= single.loss.loss(single.model, single.guide, xt) + 1e-3
    )


def test_raw_pyro_svi_trains_the_model():
    x = torch.as_tensor(blobs(300), dtype=torch.float32)
    model = GaussianMixture(3, em_iterations=0)  # from k-means: room for SVI to climb
    model.setup(x)
    svi = pyro.infer.SVI(model.model, model.guide, pyro.optim.Adam({"lr": 0.01}), model.loss)
    first = svi.step(x)
    for _ in range(20):
        last = svi.step(x)
    assert math.isfinite(first) and last <= first + 1e-3


def test_raw_pyro_svi_needs_the_data_scale_of_the_priors():
    # Built from n_features alone, the priors' empirical-Bayes scale is unknown: running the
    # model must say so instead of using a unit-scale prior.
    model = GaussianMixture(2, n_features=2)
    svi = pyro.infer.SVI(model.model, model.guide, pyro.optim.Adam({"lr": 0.01}), model.loss)
    with pytest.raises(RuntimeError, match=r"call setup\(x\)"):
        svi.step(torch.zeros(5, 2))
    model.setup(torch.as_tensor(blobs(50), dtype=torch.float32))
    assert math.isfinite(svi.step(torch.as_tensor(blobs(50), dtype=torch.float32)))


def log_joint_gradient(model: GaussianMixture, x: torch.Tensor) -> float:
    """Largest |d log p(x, theta) / d u| per row over the unconstrained parameters u, by
    Pyro: the negative TraceEnum_ELBO of the Delta guide is the log joint."""
    params = [p for p in model.parameters() if p.requires_grad]
    loss = model.loss.differentiable_loss(model.model, model.guide, x)
    return max(g.abs().max().item() for g in torch.autograd.grad(loss, params)) / x.shape[0]


@pytest.mark.parametrize("covariance", COVARIANCE_TYPES)
def test_map_fit_is_a_stationary_point_of_the_log_joint(covariance):
    x = torch.as_tensor(blobs(300, seed=6), dtype=torch.float64)
    model = GaussianMixture(3, covariance=covariance, tol=1e-8).double()
    pyrogen.fit(model, x, progress=False)
    ours = log_joint_gradient(model, x)
    # The maximum-likelihood point (scikit-learn, converged) is not the MAP: the priors'
    # gradient is left over there. Ours must be far smaller than that (float64; MAP-EM
    # stops at 1e-8 nats per row, its M-step at gradients of 1e-6 per row).
    reference = SklearnMixture(3, covariance_type=covariance, tol=1e-10, max_iter=1000)
    reference.fit(x.numpy())
    ml = GaussianMixture(3, covariance=covariance).double()
    ml.setup(x)  # the priors' data scale
    ml.set_parameters(reference.weights_, reference.means_, reference.covariances_)
    assert ours < 1e-5 and log_joint_gradient(ml, x) > 10 * ours


def test_map_fit_with_default_tolerance_is_near_the_mode():
    x = torch.as_tensor(pyrogen.data.old_faithful(), dtype=torch.float64)
    default = GaussianMixture(2).double()
    pyrogen.fit(default, x, progress=False)
    tight = GaussianMixture(2, tol=1e-9).double()
    tight.setup(x)
    loss = lambda m: m.loss.loss(m.model, m.guide, x) / x.shape[0]  # noqa: E731
    # tol=1e-3 nats per row is EM's stopping rule; the objective is within it
    assert loss(default) == pytest.approx(loss(tight), abs=1e-3)


class PerturbedMixture(GaussianMixture):
    """A mixture whose setup ends a tenth of a data sd away from the MAP-EM mode."""

    def setup(self, x, y=None, *, seed=0):
        super().setup(x, y, seed=seed)
        with torch.no_grad():
            self.locs_loc.add_(0.1 * self.data_scale)


def test_the_check_step_keeps_the_mode_and_refuses_a_perturbed_one():
    x = torch.as_tensor(blobs(200, seed=3), dtype=torch.float64)
    mode = GaussianMixture(3).double()
    mode.setup(x)
    model = GaussianMixture(3).double()
    result = pyrogen.fit(model, x, progress=False)
    # one Pyro loss and gradient, no update: the parameters are setup's, bit for bit
    assert result.steps == 1 and result.best_step == 0 and result.stopped_early
    for (name, a), b in zip(mode.state_dict().items(), model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    perturbed = PerturbedMixture(3).double()
    result = pyrogen.fit(perturbed, x, steps=20, progress=False)
    # the gradient test refuses it, and the SVI steps climb back towards the mode
    assert result.steps > 1 and result.best_loss < result.losses[0] - 1e-3
    # with early stopping off, the family's gradient test is off too: every step is taken
    result = pyrogen.fit(GaussianMixture(3).double(), x, steps=3, early_stopping=None,
                         progress=False)  # fmt: skip
    assert result.steps == 3


def test_svi_only_defaults_reach_the_map():
    # Without EM the default SVI climbs from k-means to the mode MAP-EM finds (Old Faithful,
    # float32 SVI against a float64 MAP-EM reference: 1e-4 nats per row covers float32).
    x = pyrogen.data.old_faithful()
    svi = GaussianMixture(2, em_iterations=0)
    result = pyrogen.fit(svi, x, progress=False)
    reference = GaussianMixture(2, tol=1e-9).double()
    reference.setup(torch.as_tensor(x, dtype=torch.float64))
    xd = torch.as_tensor(x, dtype=torch.float64)
    best = reference.loss.loss(reference.model, reference.guide, xd) / x.shape[0]
    assert result.best_step > 0
    assert result.best_loss == pytest.approx(best, abs=1e-4)


def test_sample_shapes_and_moments():
    model = GaussianMixture(2, covariance="diag", n_features=3)
    model.set_parameters(
        torch.tensor([0.25, 0.75]),
        torch.tensor([[0.0, 0.0, 0.0], [5.0, 5.0, 5.0]]),
        torch.ones(2, 3),
    )
    draws = model.sample(20000)
    assert draws.shape == (20000, 3)
    assert draws.mean(0).numpy() == pytest.approx([3.75] * 3, abs=0.05)


def test_relabel_undoes_permutations():
    model = GaussianMixture(3, covariance="full", n_features=2)
    locs = torch.tensor([[-3.0, 0.0], [0.0, 0.0], [3.0, 1.0]])
    model.set_parameters(torch.tensor([0.2, 0.3, 0.5]), locs, torch.eye(2).expand(3, 2, 2) * 0.5)
    values = model.point_estimates()
    permutations = [torch.tensor(p) for p in itertools.permutations(range(3))]
    draws = {
        name: torch.stack([value[p] if value.shape[:1] == (3,) else value for p in permutations])
        for name, value in values.items()
    }
    relabelled = model.relabel(draws)
    for name, value in values.items():
        assert torch.allclose(relabelled[name], value.expand_as(relabelled[name]))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"n_components": 0}, "n_components: expected a positive integer, got 0"),
        ({"n_components": 2.5}, "n_components: expected a positive integer, got 2.5"),
        ({"covariance": "banana"}, "covariance: expected one of"),
        ({"inference": "laplace"}, "inference: expected one of"),
        ({"tol": -1.0}, "tol: expected a positive finite number"),
    ],
)
def test_bad_constructor_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GaussianMixture(**kwargs)


def test_bad_data():
    with pytest.raises(ValueError, match="n_components: expected at most n_samples=3"):
        fitted(GaussianMixture(5), np.zeros((3, 2)), progress=False)
    bad = blobs(50)
    bad[7, 1] = np.nan
    with pytest.raises(ValueError, match="row 7"):
        fitted(GaussianMixture(2), bad, progress=False)
    with pytest.raises(ValueError, match=r"2-D"):
        GaussianMixture(2).setup(np.arange(10.0))
    model = fitted(GaussianMixture(2), blobs(50), steps=2, progress=False)
    with pytest.raises(ValueError, match="x: expected 2 columns, got 3"):
        model.log_prob(np.zeros((4, 3)))
    with pytest.raises(RuntimeError, match=r"call pyrogen\.fit\(model, x\)"):
        GaussianMixture(2).log_prob(np.zeros((4, 2)))


def test_one_feature_and_one_component():
    x = np.random.default_rng(0).normal(size=(1000, 1))
    expected = multivariate_normal(x.mean(), x.var()).logpdf(x[:, 0])
    for covariance in COVARIANCE_TYPES:
        model = fitted(GaussianMixture(1, covariance=covariance), x, steps=5, progress=False)
        # The fit is MAP, not maximum likelihood: the weak priors shift it by O(1/N).
        assert model.log_prob(x).mean().item() == pytest.approx(expected.mean(), abs=2e-3)


def test_predict_with_one_component():
    x = blobs(30)
    model = fitted(GaussianMixture(1), x, steps=2, progress=False)
    assert torch.equal(model.predict(x), torch.zeros(30, dtype=torch.long))


@pytest.mark.parametrize("covariance", COVARIANCE_TYPES)
def test_block_wise_m_step_reaches_the_mode_without_the_lbfgs_fallback(covariance, monkeypatch):
    # The closed forms (weights, locs), the Newton solve (diag/spherical scales) and the
    # fixed point (full/tied covariances) alone must land on a stationary point of the
    # model's log joint; the general L-BFGS M-step is only a fallback.
    def fallback(*args, **kwargs):
        raise AssertionError("the L-BFGS M-step ran")

    monkeypatch.setattr(MapMStep, "lbfgs", fallback)
    x = torch.as_tensor(blobs(300, seed=7), dtype=torch.float64)
    model = GaussianMixture(3, covariance=covariance, tol=1e-8).double()
    model.setup(x)
    assert log_joint_gradient(model, x) < 1e-5


@pytest.mark.parametrize("covariance", ["full", "tied"])
@pytest.mark.parametrize("n_features", [1, 2, 4])
@pytest.mark.parametrize("concentration", [1.0, 2.5])
def test_covariance_prior_gradient_equals_autograd(covariance, n_features, concentration):
    # The fixed-point M-step's closed-form gradient of log p(scales) + log p(corr_cholesky)
    # with respect to the covariances, against autograd of the model's own priors.
    model = GaussianMixture(
        3,
        covariance=covariance,
        n_features=n_features,
        correlation_concentration=concentration,
        scale_prior_width=0.7,
    ).double()
    data_scale = torch.linspace(0.5, 2.0, n_features, dtype=torch.float64)
    generator = torch.Generator().manual_seed(0)
    batch = (3,) if covariance == "full" else ()
    factor = torch.randn(*batch, n_features, n_features, generator=generator).double()
    covariances = factor @ factor.transpose(-1, -2) + torch.eye(n_features).double()
    centre = torch.zeros_like(data_scale)
    priors = {
        site.name: model._prior(site, centre, data_scale)
        for site in model._global_sites()
        if site.name in ("scales", "corr_cholesky")
    }
    free = covariances.clone().requires_grad_()
    symmetric = 0.5 * (free + free.transpose(-1, -2))
    scales = symmetric.diagonal(dim1=-2, dim2=-1).sqrt()
    total = priors["scales"].log_prob(scales).sum()
    if "corr_cholesky" in priors:
        tril = torch.linalg.cholesky(symmetric)
        total = total + priors["corr_cholesky"].log_prob(tril / scales.unsqueeze(-1)).sum()
    (expected,) = torch.autograd.grad(total, free)
    gradient = covariance_prior_gradient(model, data_scale)(covariances)
    torch.testing.assert_close(gradient, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("covariance", COVARIANCE_TYPES)
def test_starts_are_scored_at_once_as_one_by_one(covariance):
    # The starts' log priors, scored stacked, are each start's own, and without Pyro's
    # validation (the fit's values are in the supports by construction).
    x = torch.as_tensor(blobs(200, seed=4), dtype=torch.float64)
    model = GaussianMixture(3, covariance=covariance).double()
    model.setup(x)
    log_prior = model._log_prior(torch.tensor([1.3, 0.8], dtype=torch.float64))
    starts = [model.mixture_parameters()]
    shifted = model.mixture_parameters()
    starts.append(
        MixtureParameters(
            shifted.weights.flip(0), shifted.locs + 0.5, shifted.covariances * 1.5, covariance
        )
    )
    stacked = MixtureParameters(
        torch.stack([p.weights for p in starts]),
        torch.stack([p.locs for p in starts]),
        torch.stack([p.covariances for p in starts]),
        covariance,
    )
    with pyro.validation_enabled(True):
        together = log_prior(model._site_values(stacked), batch_dims=1)
        alone = torch.stack([log_prior(model._site_values(p)) for p in starts])
    torch.testing.assert_close(together, alone, rtol=1e-12, atol=1e-12)
    outside = {"weights": torch.tensor([0.9, 0.9, 0.9], dtype=torch.float64)}
    values = {**model._site_values(starts[0]), **outside}  # off the simplex: not checked
    with pyro.validation_enabled(True):
        assert torch.isfinite(log_prior(values))


def degenerate_data(case: str) -> torch.Tensor:
    rng = np.random.default_rng(3)
    if case == "identical rows":
        x = np.tile([0.3, -1.2], (20, 1))
    elif case == "constant column":
        x = np.stack([rng.normal(size=30), np.zeros(30)], -1)
    else:  # more components than distinct rows: two points, ten copies each
        x = np.tile([[0.0, 0.0], [1.0, 2.0]], (10, 1))
    return torch.tensor(x, dtype=torch.float64)


@pytest.mark.parametrize("covariance", COVARIANCE_TYPES)
@pytest.mark.parametrize("case", ["identical rows", "constant column", "k above distinct rows"])
@pytest.mark.parametrize("weight_concentration", [1.0, 0.5])
def test_degenerate_data_gives_valid_parameters(covariance, case, weight_concentration):
    # As scikit-learn's reg_covar: variances (eigenvalues) floored, weights kept off the
    # simplex's boundary, empty components at the prior's mode (the L-BFGS M-step of a
    # concentration below 1 bounded the same way).
    x = degenerate_data(case)
    model = GaussianMixture(3, covariance, weight_concentration=weight_concentration).double()
    model.setup(x)
    params = model.mixture_parameters()
    for value in (params.weights, params.locs, params.covariances):
        assert torch.isfinite(value).all()
    assert (params.weights > 0).all() and params.weights.sum().item() == pytest.approx(1.0)
    full = torch.tensor(np.array(full_covariances(model)))
    assert (torch.linalg.eigvalsh(full) > 0).all()
    assert torch.isfinite(model.log_prob(x)).all()
    assert torch.isfinite(model.log_prob(x + 0.5)).all()


def test_component_log_prob_whole_columns_match_the_per_row_gather():
    """Enumerated assignments ((K, 1), broadcast over rows) take whole columns of the
    (N, K) table; they must equal the row-by-row lookup, in and out of order."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(7, 2, generator=generator, dtype=torch.float64)
    params = MixtureParameters(
        torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64),
        torch.randn(3, 2, generator=generator, dtype=torch.float64),
        torch.rand(3, 2, generator=generator, dtype=torch.float64) + 0.5,
        "diag",
    )
    for order in ([0, 1, 2], [2, 0, 1]):
        enumerated = torch.tensor(order).reshape(3, 1)
        expanded = enumerated.expand(3, 7)
        reference = GaussianComponents(params, expanded.contiguous()).log_prob(x)
        for assignment in (enumerated, expanded):
            got = GaussianComponents(params, assignment).log_prob(x)
            assert got.shape == (3, 7)
            torch.testing.assert_close(got, reference)
    sampled = torch.randint(3, (7,), generator=generator)
    table = GaussianComponents(params, torch.arange(3).reshape(3, 1)).log_prob(x)
    torch.testing.assert_close(
        GaussianComponents(params, sampled).log_prob(x), table.T[torch.arange(7), sampled]
    )


@pytest.mark.parametrize(("scale", "dtype"), [(1e200, torch.float64), (1e20, torch.float32)])
def test_spreads_beyond_the_float_range_are_refused_naming_x(scale, dtype):
    # Variances of such values overflow to inf; before, the fit failed deep inside
    # (an invalid LogNormal or a Cholesky error).
    x = pyrogen.data.old_faithful().to(dtype) * scale
    with pytest.raises(ValueError, match=r"^x: expected spreads below .* rescale the data"):
        pyrogen.fit(pyrogen.GaussianMixture(2), x, steps=2, progress=False)


def test_large_but_representable_spreads_fit_in_their_units():
    x = pyrogen.data.old_faithful().double()
    small, large = pyrogen.GaussianMixture(2), pyrogen.GaussianMixture(2)
    pyrogen.fit(small, x, steps=2, progress=False)
    pyrogen.fit(large, x * 1e100, steps=2, progress=False)
    torch.testing.assert_close(large.means_ / 1e100, small.means_, rtol=1e-9, atol=1e-9)


def test_covariances_that_cannot_fit_in_memory_are_refused_before_allocation(monkeypatch):
    import pyrogen.models.gmm as gmm_module

    monkeypatch.setattr(gmm_module, "physical_memory", lambda: 24 * 2**30)
    x = torch.randn(5, 200_000)  # full covariances: 2 x 200,000 x 200,000 values
    with pytest.raises(ValueError, match=r"^x: 200000 features .* need about \d+ GiB"):
        pyrogen.fit(pyrogen.GaussianMixture(2), x, steps=1, progress=False)
    pyrogen.fit(pyrogen.GaussianMixture(2, covariance="diag"), x[:, :2000], steps=1, progress=False)
