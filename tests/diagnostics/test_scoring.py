"""score and summarize: every family's statistics, named bounds, labels, and the same
statistics from rows split over processes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import pyrogen
from pyrogen.diagnostics import clustering_accuracy, reduce_scores, score, scoring, summarize


def test_summarize(fit_gmm, two_clusters):
    model, _ = fit_gmm("spherical", "map", steps=5)
    summary = summarize(model, two_clusters)
    assert summary["n_components"] == 2 and summary["n_features"] == 2
    assert summary["log_likelihood_per_row"] == pytest.approx(
        float(model.log_prob(two_clusters).mean()), rel=1e-6
    )
    assert json.loads(json.dumps(summary, allow_nan=False)) == summary


def test_score_of_a_latent_variable_model(fitted_vae):
    vae, _, _, test = fitted_vae
    state = torch.get_rng_state()
    stats = score(vae, test, iw_samples=50, seed=0)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's random state is kept
    assert stats == score(vae, test, iw_samples=50, seed=0)
    assert stats != score(vae, test, iw_samples=50, seed=1)
    torch.manual_seed(0)
    np.testing.assert_allclose(stats["elbo_per_example"], float(vae.elbo(test).mean()), rtol=1e-6)
    ll = stats["log_likelihood_per_example"]
    assert stats["bits_per_dim"] == pytest.approx(-ll / (16 * np.log(2)), rel=1e-12)
    # L_50 >= ELBO in expectation; each standard error covers its mean's noise, so their
    # sum covers the difference's whatever the correlation (4 sigma: false alarms < 1e-4).
    errors = stats["standard_errors"]
    margin = 4 * (errors["elbo_per_example"] + errors["log_likelihood_per_example"])
    assert stats["elbo_per_example"] <= ll + margin
    assert set(stats["bounds"]) == {
        "elbo_per_example",
        "log_likelihood_per_example",
        "bits_per_dim",
        "reconstruction_per_example",
        "kl_per_example",
    }
    # the ELBO's two terms, from the same draws: reconstruction - KL = ELBO
    terms = stats["reconstruction_per_example"] - stats["kl_per_example"]
    assert terms == pytest.approx(stats["elbo_per_example"], rel=1e-6)
    assert stats["kl_per_example"] > 0
    assert json.loads(json.dumps(stats, allow_nan=False)) == stats


def test_score_of_an_exact_model_and_bad_arguments(fit_gmm, two_clusters):
    model, _ = fit_gmm("full", "map", steps=5)
    stats = score(model, two_clusters)
    expected = float(model.log_prob(two_clusters).double().mean())
    assert stats["log_likelihood_per_example"] == pytest.approx(expected, rel=1e-6)
    assert (
        "elbo_per_example" not in stats and "exact" in stats["bounds"]["log_likelihood_per_example"]
    )
    with pytest.raises(ValueError, match="iw_samples: expected a positive integer, got 0"):
        score(model, two_clusters, iw_samples=0)
    with pytest.raises(TypeError, match="model: expected a pyrogen GenerativeModel, got str"):
        score("gmm", two_clusters)


def test_score_of_a_model_conditioned_on_labels(binary_rows, variant):
    x, y = binary_rows
    cvae = variant(pyrogen.ConditionalVAE, num_classes=3)
    stats = score(cvae, x, labels=y, iw_samples=5, seed=0)
    assert stats["quantity"] == "log p(x | y)"
    assert "lower bound on log p(x | y)" in stats["bounds"]["elbo_per_example"]
    torch.manual_seed(0)
    np.testing.assert_allclose(stats["elbo_per_example"], float(cvae.elbo(x, y).mean()), rtol=1e-5)
    assert "accuracy" not in stats  # a conditional model predicts nothing
    with pytest.raises(ValueError, match=r"labels: expected the labels \(40,\) .* log p\(x \| y\)"):
        score(cvae, x)
    with pytest.raises(ValueError, match=r"labels: expected shape \(40,\), one per example"):
        score(cvae, x, labels=y[:5])


def test_score_of_a_completion_model_counts_only_the_missing_values(binary_rows, variant):
    x, y = binary_rows
    cvae = variant(pyrogen.ConditionalVAE, observed="top")
    stats = score(cvae, x, iw_samples=5)
    assert stats["quantity"] == "log p(x_missing | x_given)"
    ll = stats["log_likelihood_per_example"]
    assert stats["bits_per_dim"] == pytest.approx(-ll / (8 * np.log(2)), rel=1e-9)
    assert "D = 8 values per example (the missing ones)" in stats["bounds"]["bits_per_dim"]
    both = variant(pyrogen.ConditionalVAE, num_classes=3, observed="top")
    assert score(both, x, labels=y, iw_samples=2)["quantity"] == "log p(x_missing | x_given, y)"


def test_score_of_a_classifier_and_of_a_clustering_model(binary_rows, variant):
    x, y = binary_rows
    ssvae = variant(pyrogen.SemiSupervisedVAE, num_classes=3)
    partly = y.clone()
    partly[:10] = -1  # unlabelled rows are left out of the accuracy
    stats = score(ssvae, x, labels=partly, iw_samples=2)
    expected = float((ssvae.predict(x[10:]) == y[10:]).double().mean())
    assert stats["accuracy"] == pytest.approx(expected) and stats["labelled_rows"] == 30
    assert stats["quantity"] == "log p(x)"  # the label summed out, whatever labels are given
    assert stats["log_likelihood_per_example"] == pytest.approx(
        score(ssvae, x, iw_samples=2)["log_likelihood_per_example"]
    )
    gmvae = variant(pyrogen.GaussianMixtureVAE, n_components=4)
    stats = score(gmvae, x, labels=y.numpy(), iw_samples=2)
    assert stats["clustering_accuracy"] == pytest.approx(clustering_accuracy(y, gmvae.predict(x)))
    assert "Monte Carlo KL" in stats["bounds"]["elbo_per_example"]
    assert "best one-to-one matching" in stats["bounds"]["clustering_accuracy"]


# --- one reduction, in one process or many ----------------------------------------------
def test_reduce_scores_of_given_per_example_numbers(variant):
    gmvae = variant(pyrogen.GaussianMixtureVAE, n_components=3)
    per_example = {
        "elbo": torch.tensor([-3.0, -5.0]),
        "log_likelihood": torch.tensor([-2.0, -4.0]),
        "predicted": torch.tensor([2, 1]),
    }
    stats = reduce_scores(gmvae, per_example, num_samples=7, values=4, labels=torch.tensor([0, 5]))
    assert stats["n_rows"] == 2 and stats["iw_samples"] == 7 and stats["quantity"] == "log p(x)"
    assert stats["elbo_per_example"] == -4.0 and stats["log_likelihood_per_example"] == -3.0
    assert stats["bits_per_dim"] == pytest.approx(3.0 / (4 * np.log(2)))
    assert stats["standard_errors"] == {
        "elbo_per_example": pytest.approx(1.0),
        "log_likelihood_per_example": pytest.approx(1.0),
    }
    assert stats["clustering_accuracy"] == 1.0 and stats["labelled_rows"] == 2
    assert "most probable of the 3 components" in stats["bounds"]["clustering_accuracy"]
    assert "D = 4 values" in stats["bounds"]["bits_per_dim"]
    assert set(stats["bounds"]) == {
        "elbo_per_example",
        "log_likelihood_per_example",
        "bits_per_dim",
        "clustering_accuracy",
        "reconstruction",  # described as the model declares them, though not given here
        "kl",
    }
    assert "predicted_per_example" not in stats


def test_score_of_a_diffusion_model_reports_its_terms_and_steps():
    x = torch.rand(12, 16, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    model = pyrogen.DiffusionVAE((16,), timesteps=10, hidden=(8,))
    stats = score(model, x, iw_samples=2)
    assert stats["step_samples"] == 2 and "iw_samples" not in stats
    terms = {f"{term}_per_example" for term in ("elbo", "reconstruction", "prior", "diffusion")}
    assert terms <= set(stats) and terms <= set(stats["bounds"])
    assert stats["log_likelihood_per_example"] == stats["elbo_per_example"]
    assert score(model, x)["step_samples"] == model.default_score_samples


def test_score_of_an_exact_flow_has_no_bounds():
    x = torch.randn(20, 2, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    flow = pyrogen.FlowDensity((2,))
    pyrogen.fit(flow, x, steps=2, progress=False)
    stats = score(flow, x)
    assert stats["bounds"] == {"log_likelihood_per_example": "exact log p(x)"}
    assert "bits_per_dim" not in stats and "iw_samples" not in stats
    expected = float(flow.log_prob(x).double().mean())
    assert stats["log_likelihood_per_example"] == pytest.approx(expected, rel=1e-6)
    assert summarize(flow, x)["log_likelihood_per_row"] == pytest.approx(expected, rel=1e-5)


def test_rows_split_over_two_processes_give_the_same_statistics(fit_gmm, two_clusters):
    # Two CPU processes (gloo): the exact log-likelihood and predictions of each half,
    # concatenated in row order, reduce to what one process gives.
    model, _ = fit_gmm("full", "map", steps=5)
    labels = torch.arange(60) % 2
    one = score(model, two_clusters, labels=labels)
    two = score(model, two_clusters, labels=labels, devices=2)
    assert two.keys() == one.keys() and two["bounds"] == one["bounds"]
    assert two["n_rows"] == 60 and two["clustering_accuracy"] == one["clustering_accuracy"]
    name = "log_likelihood_per_example"
    assert two[name] == pytest.approx(one[name], rel=1e-6)
    assert two["standard_errors"][name] == pytest.approx(one["standard_errors"][name], rel=1e-5)


def _halves(calls):
    """A stand-in for distributed.evaluate: score_examples of each half of the rows (seeded
    like process r), concatenated, and the call recorded."""

    def evaluate(model, x, y=None, *, num_samples=None, devices, num_nodes, device, seed):
        calls.append((devices, num_nodes, device))
        parts = []
        for rank, rows in enumerate(x.tensor_split(devices * num_nodes)):
            torch.manual_seed(seed + rank)
            part_y = None if y is None else y[: rows.shape[0]]
            parts.append(model.score_examples(rows, part_y, num_samples=num_samples))
        return {key: torch.cat([part[key] for part in parts]) for key in parts[0]}

    return evaluate


def test_split_scores_go_through_the_same_reduction(monkeypatch, fit_gmm, two_clusters, variant):
    calls = []
    monkeypatch.setattr(scoring.distributed, "evaluate", _halves(calls))
    x = (torch.rand(10, 16, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    vae = variant(pyrogen.VAE)
    split = score(vae, x, iw_samples=3, devices=2, num_nodes=2, device="cpu")
    assert calls == [(2, 2, "cpu")]
    assert split.keys() == score(vae, x, iw_samples=3).keys()
    assert split["n_rows"] == 10 and split["iw_samples"] == 3
    model, _ = fit_gmm("full", "map", steps=5)
    split, whole = summarize(model, two_clusters, devices=2), summarize(model, two_clusters)
    assert split.keys() == whole.keys()
    for key in ("log_likelihood_per_row", "bic", "aic"):
        assert split[key] == pytest.approx(whole[key], rel=1e-6)
    assert split["weights"] == whole["weights"] and split["config"] == whole["config"]
    assert len(calls) == 2
    with pytest.raises(ValueError, match="devices: expected a positive integer, got 0"):
        score(vae, x, devices=0)


@pytest.mark.parametrize("family", [pyrogen.NaiveBayes, pyrogen.LogisticRegression])
def test_log_loss_of_a_classifier_is_scikit_learns(family):
    from sklearn.datasets import load_iris
    from sklearn.metrics import log_loss

    x, y = load_iris(return_X_y=True)
    x = torch.as_tensor(x)
    model = family(3)
    model.setup(x, y)
    labels = torch.as_tensor(y).clone()
    if not model.conditions_on_labels:  # logistic regression needs every row's label
        labels[::7] = -1  # unlabelled rows are left out of the log-loss
    stats = score(model, x, labels=labels)
    known = (labels >= 0).numpy()
    expected = log_loss(y[known], model.predict_proba(x).numpy()[known], labels=[0, 1, 2])
    assert stats["log_loss"] == pytest.approx(expected, rel=1e-10)
    assert stats["labelled_rows"] == int(known.sum())
    assert "-log p(y | x)" in stats["bounds"]["log_loss"]
