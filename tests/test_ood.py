"""pyrogen.ood: metrics equal scikit-learn's, scores against closed forms and by hand, every
family with a likelihood scored through the contract, the others refused."""

from __future__ import annotations

import math

import matplotlib
import numpy as np
import pytest
import torch
from scipy import integrate, stats
from sklearn import metrics

import pyrogen
from pyrogen import ood
from pyrogen.models import REGISTRY
from tests.models.test_contract import EXAMPLES

matplotlib.use("Agg")


def _gaussian_mixture(x: torch.Tensor, components: int = 1) -> pyrogen.GaussianMixture:
    return pyrogen.fit(pyrogen.GaussianMixture(components), x, steps=5, progress=False).model


# --- metrics ---------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(5))
def test_metrics_equal_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 200)
    scores = rng.integers(0, 12, 200) + 2.0 * labels  # many ties, within and across classes
    assert ood.auroc(labels, scores) == pytest.approx(metrics.roc_auc_score(labels, scores))
    assert ood.aupr(labels, scores) == pytest.approx(
        metrics.average_precision_score(labels, scores)
    )
    fpr, tpr, _ = metrics.roc_curve(labels, scores, drop_intermediate=False)
    for target in (0.5, 0.95, 1.0):
        expected = fpr[np.searchsorted(tpr, target - 1e-12)]  # first tpr >= target
        assert ood.fpr_at_tpr(labels, scores, target) == pytest.approx(expected)


def test_ood_metrics_count_in_distribution_rows_as_positives_kept_when_low():
    rng = np.random.default_rng(0)
    inside, outside = rng.normal(0, 1, 300), rng.normal(1.5, 1, 200)
    result = ood.ood_metrics(torch.as_tensor(inside), outside)
    labels = np.r_[np.ones(300), np.zeros(200)]
    scores = np.r_[inside, outside]
    assert result["auroc"] == pytest.approx(metrics.roc_auc_score(labels, -scores))
    assert result["aupr_in"] == pytest.approx(metrics.average_precision_score(labels, -scores))
    assert result["aupr_out"] == pytest.approx(metrics.average_precision_score(1 - labels, scores))
    fpr, tpr, _ = metrics.roc_curve(labels, -scores, drop_intermediate=False)
    assert result["fpr_at_95_tpr"] == pytest.approx(fpr[np.searchsorted(tpr, 0.95)])
    assert (result["n_in"], result["n_out"]) == (300, 200)


def test_metrics_refuse_one_class_and_bad_shapes():
    with pytest.raises(ValueError, match="labels: expected both positives"):
        ood.auroc([1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="labels: expected shape"):
        ood.aupr([1, 0, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="tpr: expected a rate"):
        ood.fpr_at_tpr([1, 0], [0.1, 0.2], tpr=1.5)
    with pytest.raises(ValueError, match="in_scores: expected finite"):
        ood.ood_metrics([float("nan")], [1.0])


def test_rejection_curve_is_the_accuracy_of_the_rows_kept():
    rng = np.random.default_rng(1)
    correct, scores = rng.random(40) < 0.7, rng.random(40)
    rates, accuracy = ood.rejection_curve(torch.as_tensor(correct), scores, [0.0, 0.25, 0.5])
    for rate, value in zip(rates, accuracy, strict=True):
        kept = np.argsort(-scores)[int(rate * 40) :]  # highest scores rejected first
        assert value == pytest.approx(correct[kept].mean())
    with pytest.raises(ValueError, match="rates: expected rejection rates"):
        ood.rejection_curve(correct, scores, [1.0])


# --- scores ----------------------------------------------------------------------------------
def test_nll_is_minus_log_prob_per_value_for_a_mixture():
    x = torch.randn(60, 3)
    gmm = _gaussian_mixture(x, 2)
    expected = -gmm.log_prob(x) / 3
    torch.testing.assert_close(ood.negative_log_likelihood(gmm, x), expected)


def test_exact_auroc_of_the_nll_of_two_gaussians():
    """In N(0, 1) against out N(2, 1), scored by a Gaussian fitted to the in rows: -log p
    ranks by |x - m|, so AUROC = P(|X_out - m| > |X_in - m|), by numerical integration.
    Tolerance: the AUROC's standard error is at most sqrt(A (1 - A) / min(n_in, n_out))
    (Hanley & McNeil 1982), 0.009 here; 4 of them."""
    generator = torch.Generator().manual_seed(0)
    train = torch.randn(2000, 1, generator=generator, dtype=torch.float64)
    gmm = _gaussian_mixture(train)
    mean = float(gmm.fit_statistics(train)["means"][0][0])
    inside = torch.randn(2000, 1, generator=generator, dtype=torch.float64)
    outside = torch.randn(2000, 1, generator=generator, dtype=torch.float64) + 2
    result = ood.ood_metrics(*(ood.negative_log_likelihood(gmm, x) for x in (inside, outside)))

    def beyond(r: float) -> float:  # P(|X_out - mean| > r)
        return stats.norm.sf(mean + r, 2, 1) + stats.norm.cdf(mean - r, 2, 1)

    def density(r: float) -> float:  # of |X_in - mean|
        return stats.norm.pdf(mean + r) + stats.norm.pdf(mean - r)

    exact = integrate.quad(lambda r: density(r) * beyond(r), 0, np.inf)[0]
    tolerance = 4 * math.sqrt(exact * (1 - exact) / 2000)
    assert result["auroc"] == pytest.approx(exact, abs=tolerance)
    assert 0.7 < exact < 0.9  # a case that is neither trivial nor hopeless


def test_typicality_threshold_is_a_seeded_bootstrap_quantile():
    rng = torch.Generator().manual_seed(0)
    train, validation = torch.randn(200, generator=rng), torch.randn(100, generator=rng)
    test = ood.TypicalityTest.from_scores(train, validation, batch_size=10, alpha=0.05, seed=3)
    rows = torch.randint(100, (1000, 10), generator=torch.Generator().manual_seed(3))
    distances = (validation.double()[rows].mean(-1) - train.double().mean()).abs()
    assert test.threshold == pytest.approx(float(torch.quantile(distances, 0.95)))
    assert test.typical_nll == pytest.approx(float(train.double().mean()))
    again = ood.TypicalityTest.from_scores(train, validation, batch_size=10, alpha=0.05, seed=3)
    assert again.threshold == test.threshold
    with pytest.raises(ValueError, match="x: expected a whole number of batches of 10"):
        test.statistics_of(torch.zeros(15))
    with pytest.raises(ValueError, match="alpha: expected a share"):
        ood.TypicalityTest.from_scores(train, validation, batch_size=10, alpha=1.0)


def test_typicality_flags_shifted_and_too_likely_batches_but_not_typical_ones():
    generator = torch.Generator().manual_seed(1)
    train = torch.randn(400, 8, generator=generator)
    gmm = _gaussian_mixture(train)
    validation = torch.randn(200, 8, generator=generator)
    test = ood.TypicalityTest.fit(gmm, train, validation, batch_size=20, alpha=0.01)
    typical = torch.randn(20, 8, generator=generator)
    shifted = torch.randn(20, 8, generator=generator) + 2
    too_likely = 0.05 * torch.randn(20, 8, generator=generator)  # near the mode: atypical
    flags = test.flags(gmm, torch.cat([typical, shifted, too_likely]))
    assert flags.tolist() == [False, True, True]
    # The raw likelihood ranks the batch near the mode as the most in-distribution of all.
    nll = ood.negative_log_likelihood(gmm, torch.cat([typical, too_likely])).reshape(2, 20)
    assert nll[1].mean() < nll[0].mean()


def test_typicality_score_is_the_distance_from_the_reference_mean():
    x, reference = torch.randn(30, 2), torch.randn(50, 2)
    gmm = _gaussian_mixture(reference)
    typical = ood.negative_log_likelihood(gmm, reference).mean()
    expected = (ood.negative_log_likelihood(gmm, x) - typical).abs()
    torch.testing.assert_close(ood.typicality_score(gmm, x, reference), expected)


def test_flow_ood_score_is_deprecated_and_equals_the_new_scores():
    x = torch.randn(20, 3)
    flow = pyrogen.FlowDensity((3,), "maf", transforms=1, hidden=(4,))
    with pytest.warns(DeprecationWarning, match="pyrogen.ood.typicality_score"):
        old = flow.ood_score(x[:5], reference=x)
    torch.testing.assert_close(old, ood.typicality_score(flow, x[:5], x))


def test_perturb_replaces_a_share_of_values_by_uniform_draws():
    x = torch.zeros(200, 50)
    generator = torch.Generator().manual_seed(0)
    levels = torch.tensor([0.0, 1.0])
    bits = ood.perturb(x, 0.3, levels=levels, generator=generator)
    assert set(bits.unique().tolist()) <= {0.0, 1.0}
    assert bits.mean().item() == pytest.approx(0.15, abs=0.01)  # resampled: half flip
    continuous = ood.perturb(torch.randn(200, 50), 1.0, low=-1.0, high=2.0, generator=generator)
    assert continuous.min() >= -1 and continuous.max() <= 2
    torch.testing.assert_close(ood.perturb(x + 0.5, 0.0), x + 0.5)
    with pytest.raises(ValueError, match="rate: expected a share"):
        ood.perturb(x, 1.5)


def test_likelihood_ratio_against_a_background_fitted_on_perturbed_rows():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(300, 2, generator=generator) * 0.5
    gmm = _gaussian_mixture(x)
    background = ood.fit_background(gmm, x, rate=0.5, steps=5, progress=False)
    assert type(background) is type(gmm) and background.config == gmm.config
    # Half the values drawn uniformly over the rows' range: a wider background, below the
    # model near the rows' centre and above it at their edge.
    centre, edge = torch.zeros(1, 2), torch.full((1, 2), 1.5)
    assert background.log_prob(centre) < gmm.log_prob(centre)
    assert background.log_prob(edge) > gmm.log_prob(edge)
    # The same as fitting a fresh mixture on the seeded perturbed copy by hand.
    copy = ood.perturb(x, 0.5, generator=torch.Generator().manual_seed(0))
    by_hand = pyrogen.fit(pyrogen.GaussianMixture(1), copy, steps=5, progress=False).model
    torch.testing.assert_close(background.log_prob(x), by_hand.log_prob(x))
    expected = (background.log_prob(x) - gmm.log_prob(x)) / 2
    torch.testing.assert_close(ood.likelihood_ratio(gmm, background, x), expected)


def test_code_length_grows_with_complexity():
    generator = torch.Generator().manual_seed(0)
    constant = torch.full((1, 1, 16, 16), 0.5)
    noise = torch.rand(1, 1, 16, 16, generator=generator)
    half = torch.where(torch.arange(16)[:, None] < 8, noise, constant)
    images = torch.cat([constant, half, noise])
    for compressor in ood.COMPRESSORS:
        lengths = ood.code_length(images, compressor)
        assert lengths[0] < lengths[1] < lengths[2], compressor
        assert lengths[2] > 6  # noise costs about 8 bits per value
    with pytest.raises(ValueError, match=r"x: expected values in \[0.0, 1.0\]"):
        ood.code_length(images + 1)
    with pytest.raises(ValueError, match="compressor: expected one of"):
        ood.code_length(images, "gzip")


def test_complexity_score_is_the_code_length_difference_in_bits():
    x = torch.rand(40, 4)
    gmm = _gaussian_mixture(x)
    expected = -gmm.log_prob(x) / (4 * math.log(2)) - ood.code_length(x)
    torch.testing.assert_close(ood.complexity_score(gmm, x), expected)
    nll = ood.negative_log_likelihood(gmm, x)  # given once computed: the same score
    torch.testing.assert_close(ood.complexity_score(gmm, x, nll=nll), expected)


# --- every family ----------------------------------------------------------------------------
def _first_example_of_each_family():
    firsts = {}
    for name, (family, _) in EXAMPLES.items():
        firsts.setdefault(family, name)
    return sorted(firsts.values())


@pytest.mark.parametrize("name", _first_example_of_each_family())
def test_every_family_with_a_likelihood_is_scored_or_refused(name):
    family, make = EXAMPLES[name]
    example = make()
    model = example.model
    model.setup(example.x, example.y)
    y = example.y if model.conditions_on_labels else None
    if not (model.has_likelihood and model.generates_data):
        with pytest.raises(ValueError, match=f"got {model.family}, which"):
            ood.negative_log_likelihood(model, example.x, y)
        return
    nll = ood.negative_log_likelihood(
        model, example.x[:8], y if y is None else y[:8], num_samples=2
    )
    assert nll.shape == (8,) and torch.isfinite(nll).all()
    assert "log p(x" in ood.describe_score(model, "nll", num_samples=2)


def test_gan_and_logistic_regression_are_refused_by_name():
    gan = pyrogen.GAN((3,), latent_dim=2, hidden=(4,))
    with pytest.raises(ValueError, match="got gan, which has no likelihood"):
        ood.negative_log_likelihood(gan, torch.randn(4, 3))
    logistic = pyrogen.LogisticRegression(2)
    with pytest.raises(ValueError, match=r"which models log p\(y \| x\) only"):
        ood.typicality_score(logistic, torch.randn(4, 3), torch.randn(4, 3))
    assert {"gan", "logistic_regression"} <= set(REGISTRY)


# --- report and plot -------------------------------------------------------------------------
def test_ood_report_gives_each_scores_metrics_and_refuses_mismatched_rows():
    generator = torch.Generator().manual_seed(0)
    train = torch.rand(100, 4, generator=generator) * 0.5
    gmm = _gaussian_mixture(train)
    x_in = torch.rand(50, 4, generator=generator) * 0.5
    x_out = 0.5 + torch.rand(30, 4, generator=generator) * 0.5
    report = ood.ood_report(gmm, x_in, x_out, scores=ood.SCORES)
    assert set(report) == set(ood.SCORES)
    nll = [ood.negative_log_likelihood(gmm, x) for x in (x_in, x_out)]
    assert report["nll"]["auroc"] == pytest.approx(ood.ood_metrics(*nll)["auroc"])
    assert report["nll"]["auroc"] > 0.9
    assert "exact log p(x)" in report["nll"]["description"]
    table = ood.format_report(report)
    assert "AUROC" in table and "complexity" in table
    with pytest.raises(ValueError, match=r"x_out: expected rows of shape \(4,\)"):
        ood.ood_report(gmm, x_in, torch.rand(5, 3))
    with pytest.raises(ValueError, match="scores: expected one of"):
        ood.ood_report(gmm, x_in, x_out, scores=("entropy",))


def test_plot_ood_scores_draws_a_histogram_per_set():
    ax = ood.plot_ood_scores(torch.randn(50), {"shifted": torch.randn(40) + 3, "same": np.zeros(5)})
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    assert labels[0] == "in-distribution (50)" and labels[1].startswith("shifted (40, AUROC 0.")
    assert len(labels) == 3
    with pytest.raises(ValueError, match="out_scores: expected a non-empty mapping"):
        ood.plot_ood_scores(torch.randn(5), {})


@pytest.mark.cuda
def test_scores_of_a_model_on_the_gpu_equal_those_on_the_cpu():
    x = torch.randn(50, 3)
    gmm = _gaussian_mixture(x)
    on_cpu = ood.negative_log_likelihood(gmm, x)
    gmm.to("cuda")
    on_gpu = ood.negative_log_likelihood(gmm, x)
    assert on_gpu.device.type == "cpu"
    torch.testing.assert_close(on_gpu, on_cpu, rtol=1e-4, atol=1e-5)
    generator = torch.Generator("cuda").manual_seed(0)
    assert ood.perturb(x.cuda(), 0.5, generator=generator).device.type == "cuda"
    background = ood.fit_background(gmm, x.cuda(), steps=2, progress=False, device="cuda")
    assert ood.likelihood_ratio(gmm, background, x).shape == (50,)
