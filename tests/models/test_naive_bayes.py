"""Naive Bayes against scikit-learn, brute-force sums, and its semi-supervised EM."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pyro
import pytest
import torch
from sklearn.datasets import load_breast_cancer, load_digits, load_iris
from sklearn.naive_bayes import BernoulliNB, CategoricalNB, GaussianNB, MultinomialNB

import pyrogen
from pyrogen.models.naive_bayes import PROBS, WEIGHTS

F64 = torch.float64


def _fitted(likelihood: str, x, y, **options) -> pyrogen.NaiveBayes:
    model = pyrogen.NaiveBayes(int(np.max(y)) + 1, likelihood, **options)
    model.setup(torch.as_tensor(x, dtype=F64), torch.as_tensor(y))
    return model


def _digits():
    x, y = load_digits(return_X_y=True)
    return x[:600], y[:600]


# --- MAP = scikit-learn -------------------------------------------------------------------
# Every value is a closed form computed in float64 on both sides, so they agree to rounding
# (1e-10), except the Gaussian variances: scikit-learn adds epsilon = var_smoothing x the
# largest column variance to each, pyrogen keeps each at least epsilon (the MAP under flat
# priors subject to that floor). Their relative difference is at most epsilon / var_kj: on
# iris with the default 1e-9 below 3e-7 (the smallest class variance is 0.011, epsilon
# 3e-9), hence rtol 1e-6; on breast cancer, whose areas' variance (1.2e5) makes epsilon
# larger than some class variances, both are compared without smoothing, to rounding.
@pytest.mark.parametrize(
    "loader, var_smoothing", [(load_iris, 1e-9), (load_breast_cancer, 0.0)], ids=["iris", "cancer"]
)
def test_gaussian_map_is_gaussian_nb(loader, var_smoothing):
    x, y = loader(return_X_y=True)
    model = _fitted("gaussian", x, y, var_smoothing=var_smoothing)
    reference = GaussianNB(var_smoothing=var_smoothing).fit(x, y)
    values = model.point_estimates()
    np.testing.assert_allclose(values[WEIGHTS], reference.class_prior_, rtol=1e-10)
    np.testing.assert_allclose(values["locs"], reference.theta_, rtol=1e-10)
    rtol = 1e-6 if var_smoothing else 1e-10
    np.testing.assert_allclose(values["scales"].square(), reference.var_, rtol=rtol)
    np.testing.assert_allclose(model.predict_proba(x), reference.predict_proba(x), atol=1e-6)
    assert (model.predict(x).numpy() == reference.predict(x)).all()


def test_fit_keeps_the_variance_floor_of_a_constant_feature():
    # A feature constant within a class has its variance at the floor; the engine's steps
    # must not gain by shrinking it further (the floor is part of the likelihood), so the
    # fit ends at the closed-form MAP, where scikit-learn's probabilities are.
    x, y = load_iris(return_X_y=True)
    x = np.column_stack([x, np.where(y == 0, 1.0, x[:, 0])])  # constant in class 0
    model = pyrogen.NaiveBayes(3)
    result = pyrogen.fit(model, torch.as_tensor(x), y, seed=0, progress=False)
    assert result.steps < 5  # the first step gains nothing, so early stopping ends it
    floor = float(model.variance_floor.sqrt())
    effective = model.feature_distribution(model.point_estimates(), torch.arange(3))
    assert float(effective.base_dist.scale.min()) == pytest.approx(floor, rel=1e-9)
    reference = GaussianNB().fit(x, y)
    np.testing.assert_allclose(model.predict_proba(x), reference.predict_proba(x), atol=1e-6)


@pytest.mark.parametrize("alpha", [1.0, 0.3])
def test_bernoulli_map_is_bernoulli_nb_with_beta_prior(alpha):
    # smoothing alpha = a Beta(1 + alpha, 1 + alpha) prior on every probability
    x, y = _digits()
    x = (x > 7).astype(float)
    model = _fitted("bernoulli", x, y, smoothing=alpha)
    reference = BernoulliNB(alpha=alpha, force_alpha=True).fit(x, y)
    values = model.point_estimates()
    np.testing.assert_allclose(values[PROBS].log(), reference.feature_log_prob_, rtol=1e-10)
    np.testing.assert_allclose(values[WEIGHTS].log(), reference.class_log_prior_, rtol=1e-10)
    np.testing.assert_allclose(model.predict_proba(x), reference.predict_proba(x), atol=1e-9)


def test_multinomial_map_is_multinomial_nb_with_dirichlet_prior():
    x, y = _digits()
    model = _fitted("multinomial", x, y, smoothing=0.5)
    reference = MultinomialNB(alpha=0.5).fit(x, y)
    values = model.point_estimates()
    np.testing.assert_allclose(values[PROBS].log(), reference.feature_log_prob_, rtol=1e-10)
    # the multinomial coefficient is the same for every class: the posteriors agree
    np.testing.assert_allclose(model.predict_proba(x), reference.predict_proba(x), atol=1e-9)


def test_categorical_map_is_categorical_nb_with_dirichlet_prior():
    x, y = _digits()
    x = x // 4  # levels 0..4
    model = _fitted("categorical", x, y, smoothing=1.0)
    assert model.levels == 5
    # one L for every feature: scikit-learn's min_categories gives each feature all of them
    reference = CategoricalNB(alpha=1.0, min_categories=5).fit(x, y)
    log_probs = model.point_estimates()[PROBS].log()  # (C, D, L)
    for j, table in enumerate(reference.feature_log_prob_):  # (C, L) per feature
        np.testing.assert_allclose(log_probs[:, j], table, rtol=1e-10)
    np.testing.assert_allclose(model.predict_proba(x), reference.predict_proba(x), atol=1e-9)


# --- log p(x) is normalized -----------------------------------------------------------------
def _toy(likelihood: str, levels: int | None = None) -> pyrogen.NaiveBayes:
    generator = torch.Generator().manual_seed(1)
    y = torch.arange(12) % 2
    if likelihood == "categorical":
        x = torch.randint(0, 3, (12, 2), generator=generator)
    elif likelihood == "bernoulli":
        x = torch.randint(0, 2, (12, 3), generator=generator)
    else:
        x = torch.poisson(torch.full((12, 3), 1.5), generator=generator)
    model = pyrogen.NaiveBayes(2, likelihood)
    model.setup(x.to(F64), torch.where(torch.arange(12) % 3 == 0, -1, y))  # semi-supervised
    return model


@pytest.mark.parametrize(
    "likelihood, support",
    [
        ("bernoulli", list(itertools.product([0, 1], repeat=3))),
        ("categorical", list(itertools.product(range(3), repeat=2))),
        # counts of 3 features with total 4: log p(x) is of the counts given the total
        ("multinomial", [c for c in itertools.product(range(5), repeat=3) if sum(c) == 4]),
    ],
)
def test_log_prob_sums_to_one(likelihood, support):
    model = _toy(likelihood)
    total = model.log_prob(torch.tensor(support, dtype=F64)).exp().sum()
    assert float(total) == pytest.approx(1.0, abs=1e-12)


def test_class_conditional_log_prob_sums_to_one():
    model = _toy("categorical")
    support = torch.tensor(list(itertools.product(range(3), repeat=2)), dtype=F64)
    for k in (0, 1):
        conditional = model.log_prob(support, torch.full((9,), k)).exp().sum()
        assert float(conditional) == pytest.approx(1.0, abs=1e-12)
    unknown = model.log_prob(support, torch.full((9,), -1))
    torch.testing.assert_close(unknown, model.log_prob(support))


def test_poisson_and_gaussian_log_prob_integrate_to_one():
    model = _toy("poisson")
    grid = torch.tensor(list(itertools.product(range(25), repeat=3)), dtype=F64)
    assert float(model.log_prob(grid).exp().sum()) == pytest.approx(1.0, abs=1e-9)
    x = torch.tensor([[-1.0], [0.0], [0.5], [3.0], [4.0], [5.0]], dtype=F64)
    gaussian = pyrogen.NaiveBayes(2)
    gaussian.setup(x, torch.tensor([0, 0, -1, 1, 1, -1]))
    points = torch.linspace(-30, 30, 60001, dtype=F64)[:, None]
    density = gaussian.log_prob(points).exp()
    assert float(torch.trapezoid(density, points[:, 0])) == pytest.approx(1.0, abs=1e-7)


# --- the Pyro model is the same joint ---------------------------------------------------------
def test_loss_is_minus_the_log_joint_by_brute_force():
    # TraceEnum_ELBO of the MAP guide: -(log prior + sum of log p(x, y) over labelled rows and
    # log sum_y p(x, y) over the others), the class enumerated and the labels observed
    model = _toy("bernoulli")
    generator = torch.Generator().manual_seed(2)
    x = torch.randint(0, 2, (7, 3), generator=generator).to(F64)
    y = torch.tensor([0, -1, 1, -1, 1, 0, -1])
    values = model.point_estimates()
    expected = sum(model._prior(site).log_prob(values[site.name]) for site in model._sites())
    for row, label in zip(x, y.tolist(), strict=True):
        joint = [
            math.log(values[WEIGHTS][k])
            + sum(
                math.log(values[PROBS][k, j] if v else 1 - values[PROBS][k, j])
                for j, v in enumerate(row.tolist())
            )
            for k in range(2)
        ]
        expected += (
            joint[label] if label >= 0 else float(torch.tensor(joint, dtype=F64).logsumexp(0))
        )
    loss = model.loss.loss(model.model, model.guide, x, y)
    assert loss == pytest.approx(-float(expected), rel=1e-9)


def test_map_fit_is_a_stationary_point_of_the_loss():
    # EM run to convergence reaches a zero of the loss's gradient
    model = pyrogen.NaiveBayes(2, "poisson", tol=1e-13, em_iterations=5000)
    generator = torch.Generator().manual_seed(1)
    x = torch.poisson(torch.full((12, 3), 1.5), generator=generator).to(F64)
    y = torch.where(torch.arange(12) % 3 == 0, -1, torch.arange(12) % 2)
    model.setup(x, y)
    loss = model.loss.differentiable_loss(model.model, model.guide, x, y)
    loss.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad.abs().max() < 1e-5, name


# --- semi-supervised and unsupervised -----------------------------------------------------------
def _two_classes(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    y = torch.arange(n) % 2
    x = torch.randn(n, 2, generator=generator, dtype=F64) * torch.tensor([1.0, 2.0], dtype=F64)
    return x + 3.0 * y[:, None] * torch.tensor([1.0, 0.0], dtype=F64), y


def test_unlabelled_rows_improve_on_labelled_only():
    # Two labelled rows per class and 396 unlabelled, over eight draws: EM (Nigam et al.)
    # raises the held-out log p(x) in every draw and the accuracy on average, though it can
    # end in the other split of the data (along the wide second feature) when the labelled
    # rows start it badly (2 of the 8 draws here; measured 0.71 -> 0.83 mean accuracy).
    gains, accuracies = [], []
    for seed in range(8):
        generator = torch.Generator().manual_seed(seed)
        x, y = _two_classes(400, generator)
        test_x, test_y = _two_classes(2000, generator)
        labels = torch.full_like(y, -1)
        for k in (0, 1):
            rows = (y == k).nonzero()[:, 0]
            labels[rows[torch.randperm(rows.shape[0], generator=generator)[:2]]] = k
        scores = []
        for rows in (labels >= 0, labels >= -1):
            model = pyrogen.NaiveBayes(2)
            model.setup(x[rows], labels[rows])
            accuracy = float((model.predict(test_x) == test_y).double().mean())
            scores.append((accuracy, float(model.log_prob(test_x).mean())))
        (accuracy_labelled, log_p_labelled), (accuracy_semi, log_p_semi) = scores
        gains.append(log_p_semi - log_p_labelled)
        accuracies.append((accuracy_labelled, accuracy_semi))
    assert min(gains) > 1.0, gains
    labelled, semi = np.mean(accuracies, axis=0)
    assert semi > labelled + 0.08, accuracies


def test_unsupervised_fit_is_a_latent_class_model():
    generator = torch.Generator().manual_seed(3)
    y = torch.arange(300) % 2
    x = (torch.rand(300, 20, generator=generator, dtype=F64) < 0.2 + 0.6 * y[:, None]).to(F64)
    model = pyrogen.NaiveBayes(2, "bernoulli")
    model.setup(x, seed=0)
    predicted = model.predict(x)
    agreement = float((predicted == y).double().mean())
    assert max(agreement, 1 - agreement) > 0.97  # the classes, up to their order


# --- fit, sampling, posterior -------------------------------------------------------------------
def test_fit_and_sample_pairs_and_classes():
    x, y = load_iris(return_X_y=True)
    model = pyrogen.NaiveBayes(3)
    pyrogen.fit(model, x, y, progress=False)
    pyro.set_rng_seed(0)
    draws, classes = model.sample(3000, return_labels=True)
    assert draws.shape == (3000, 4) and classes.shape == (3000,)
    counts = torch.bincount(classes, minlength=3) / 3000
    torch.testing.assert_close(counts, model.point_estimates()[WEIGHTS], atol=0.03, rtol=0)
    given = model.sample(2000, torch.full((2000,), 2))
    torch.testing.assert_close(given.mean(0), model.point_estimates()["locs"][2], atol=0.06, rtol=0)


def test_variational_posterior_and_inference_data():
    x, y = load_iris(return_X_y=True)
    model = pyrogen.NaiveBayes(3, inference="variational")
    result = pyrogen.fit(model, x, y, steps=300, seed=0, progress=False)
    assert (model.predict(x).numpy() == y).mean() > 0.9
    idata = pyrogen.to_inference_data(result, x, num_samples=20)
    assert idata.posterior["locs"].dims == ("chain", "draw", "class", "feature")
    assert idata.log_likelihood["obs"].shape == (1, 20, 150)
    with pytest.raises(ValueError, match=r"labels: expected None for a NaiveBayes"):
        pyrogen.to_inference_data(result, x, labels=y, num_samples=2)  # log p(x): no labels


def test_variational_class_probabilities_are_less_confident_on_tiny_data():
    # Four rows: the MAP's classes are sure of a point between them; averaging p(y | x)
    # over the posterior of the means and scales is less so.
    x = torch.tensor([[0.0], [0.4], [2.0], [2.6]], dtype=F64)
    y = torch.tensor([0, 0, 1, 1])
    model = pyrogen.NaiveBayes(2, inference="variational")
    pyrogen.fit(model, x, y, steps=800, seed=0, progress=False)
    pyro.set_rng_seed(0)
    point = torch.tensor([[3.5]], dtype=F64)
    draws = pyro.infer.Predictive(model.guide, num_samples=200)(x, y)
    averaged = torch.stack(
        [
            torch.softmax(
                model.joint_log_density(
                    point, {k: v[s].reshape(v.shape[1:]) for k, v in draws.items()}
                ),
                -1,
            )
            for s in range(200)
        ]
    ).mean(0)
    assert float(averaged[0, 1]) < float(model.predict_proba(point)[0, 1])


# --- bad input --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "likelihood, x, y, message",
    [
        ("gaussian", [[0.0], [1.0]], [0, 3], r"y: expected labels in 0\.\.1 or -1"),
        ("gaussian", [[0.0], [1.0]], [0, 0], r"y: expected at least one row of every class"),
        ("multinomial", [[1.0, -2.0], [1.0, 0.0]], [0, 1], r"non-negative integer counts"),
        ("bernoulli", [[1.0, 0.5], [1.0, 0.0]], [0, 1], r"binary values .* got 0.5 at row 0"),
        ("poisson", [[1.5], [1.0]], [0, 1], r"non-negative integer counts"),
    ],
)
def test_bad_input_is_named(likelihood, x, y, message):
    with pytest.raises(ValueError, match=message):
        pyrogen.NaiveBayes(2, likelihood).setup(torch.tensor(x), torch.tensor(y))


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match=r"levels: expected None for likelihood 'gaussian'"):
        pyrogen.NaiveBayes(2, levels=3)
    with pytest.raises(ValueError, match=r"likelihood: expected one of"):
        pyrogen.NaiveBayes(2, "beta")
    with pytest.raises(RuntimeError, match=r"call pyrogen.fit"):
        pyrogen.NaiveBayes(2).log_prob([[0.0]])
