"""write_run: every file, readable back; never overwrites a run; never leaves a partial one."""

from __future__ import annotations

import errno
import json
import os

import arviz
import numpy as np
import pytest
import torch

import pyrogen
from pyrogen.diagnostics import (
    clustering_accuracy,
    report,
    score,
    summarize,
    to_inference_data,
    write_run,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ALL_FILES = {
    "elbo.png",
    "clusters.png",
    "weights_posterior.png",
    "summary.json",
    "inference_data.nc",
    "model.pt",
}


@pytest.fixture
def fitted(fit_gmm, two_clusters):
    model, result = fit_gmm("full", "variational", steps=10)
    idata = to_inference_data(result, two_clusters, num_samples=30)
    return model, result, idata


def test_write_run_writes_every_file(tmp_path, fitted, two_clusters):
    model, result, idata = fitted
    path = write_run(
        tmp_path / "runs" / "first",
        model=model,
        result=result,
        data=two_clusters,
        columns=["a", "b"],
        idata=idata,
        extra={"note": "test"},
    )
    assert path == tmp_path / "runs" / "first"
    assert {p.name for p in path.iterdir()} == ALL_FILES
    assert os.listdir(path.parent) == ["first"]  # no staging folder left beside it
    for name in ("elbo.png", "clusters.png", "weights_posterior.png"):
        assert (path / name).read_bytes().startswith(PNG_MAGIC)

    summary = json.loads((path / "summary.json").read_text())
    assert summary["family"] == "gmm"
    assert summary["n_components"] == 2
    assert summary["config"] == model.config
    assert summary["n_rows"] == 60 and summary["columns"] == ["a", "b"]
    log_prob = model.log_prob(two_clusters)
    assert summary["log_likelihood_per_row"] == pytest.approx(float(log_prob.mean()), rel=1e-6)
    assert summary["bic"] == pytest.approx(model.bic(two_clusters), rel=1e-6)
    assert summary["aic"] == pytest.approx(model.aic(two_clusters), rel=1e-6)
    np.testing.assert_allclose(summary["weights"], model.weights_, rtol=1e-6)
    np.testing.assert_allclose(summary["means"], model.means_, rtol=1e-6)
    training = summary["training"]
    assert training["steps"] == result.steps == 10
    assert training["final_loss"] == pytest.approx(result.final_loss)
    assert training["best_loss"] == pytest.approx(result.best_loss)
    assert training["device"] == "cpu" and training["time_s"] > 0
    assert "TraceEnum_ELBO" in training["loss"] and "nats per example" in training["loss"]
    assert summary["note"] == "test"
    assert set(summary["files"]) == ALL_FILES

    loaded = pyrogen.load(path / "model.pt")
    torch.testing.assert_close(loaded.log_prob(two_clusters), log_prob)
    reread = arviz.from_netcdf(path / "inference_data.nc")
    np.testing.assert_allclose(reread.posterior["weights"], idata.posterior["weights"])
    np.testing.assert_allclose(reread.log_likelihood["obs"], idata.log_likelihood["obs"])


def test_write_run_with_mcmc_stats_and_into_an_empty_folder(tmp_path, two_clusters):
    model = pyrogen.GaussianMixture(2, "diag").fit(two_clusters, steps=5, progress=False)
    draws = {k: v.expand(2, 3, *v.shape) for k, v in model.point_estimates().items()}
    diverging = np.zeros((2, 3), dtype=bool)
    idata = to_inference_data(
        draws, two_clusters, model=model, sample_stats={"diverging": diverging}
    )
    (tmp_path / "empty").mkdir()
    path = write_run(tmp_path / "empty", model=model, result=None, data=two_clusters, idata=idata)
    assert {p.name for p in path.iterdir()} == ALL_FILES - {"elbo.png"}
    reread = arviz.from_netcdf(path / "inference_data.nc")
    np.testing.assert_array_equal(reread.sample_stats["diverging"], diverging)
    summary = json.loads((path / "summary.json").read_text())
    assert "training" not in summary and summary["columns"] is None


def test_refuses_to_overwrite_a_run(tmp_path, fitted, two_clusters):
    model, result, _ = fitted
    run = tmp_path / "run"
    run.mkdir()
    (run / "keep.txt").write_text("earlier run")
    with pytest.raises(ValueError, match="out_dir: expected a new or empty folder, got a folder"):
        write_run(run, model=model, result=result, data=two_clusters)
    assert os.listdir(run) == ["keep.txt"] and sorted(os.listdir(tmp_path)) == ["run"]
    with pytest.raises(ValueError, match="out_dir: expected a new or empty folder, got a file"):
        write_run(run / "keep.txt", model=model, result=result, data=two_clusters)


def test_a_map_mixture_run_says_point_estimate_and_converged(tmp_path, monkeypatch, two_clusters):
    # The MAP mixture's default fit: an EM start, polished in a few steps that barely move
    # the loss, and a posterior that is a point.
    model = pyrogen.GaussianMixture(2)
    result = pyrogen.fit(model, two_clusters, progress=False)
    idata = to_inference_data(result, two_clusters)
    titles = {}

    def recording(plot):
        def draw(*args, **kwargs):
            ax = plot(*args, **kwargs)
            titles[plot.__name__] = ax.get_title()
            return ax

        return draw

    for name in ("plot_elbo", "plot_weights_posterior"):
        monkeypatch.setattr(report, name, recording(getattr(report, name)))
    write_run(tmp_path / "run", model=model, result=result, data=two_clusters, idata=idata)
    assert titles["plot_weights_posterior"] == "point estimate of the weights (no posterior spread)"
    if max(result.losses) - min(result.losses) < 0.01:
        assert f"converged: {result.final_loss:.4f} at step {result.steps}" in titles["plot_elbo"]


def test_a_failure_leaves_nothing_behind(tmp_path, monkeypatch, fitted, two_clusters):
    model, result, idata = fitted

    def broken_plot(*args, **kwargs):
        raise RuntimeError("disk full")

    # elbo.png is written before the clusters plot fails half way through the run.
    monkeypatch.setattr(report, "plot_clusters", broken_plot)
    with pytest.raises(RuntimeError, match="disk full"):
        write_run(tmp_path / "run", model=model, result=result, data=two_clusters, idata=idata)
    assert os.listdir(tmp_path) == []


def test_a_run_appearing_meanwhile_is_not_overwritten(tmp_path, monkeypatch, fitted, two_clusters):
    model, result, _ = fitted

    def racing_rename(source, destination):
        raise OSError(errno.ENOTEMPTY, "Directory not empty")

    monkeypatch.setattr(report.os, "rename", racing_rename)
    with pytest.raises(ValueError, match="filled by another process"):
        write_run(tmp_path / "run", model=model, result=result, data=two_clusters)
    assert os.listdir(tmp_path) == []


def test_bad_arguments(tmp_path, fitted, two_clusters):
    model, result, _ = fitted
    out = tmp_path / "run"
    with pytest.raises(ValueError, match="columns: expected 2 names, got 3"):
        write_run(out, model=model, result=result, data=two_clusters, columns=["a", "b", "c"])
    with pytest.raises(
        ValueError, match=r"extra: expected keys other than the summary's own, got \['bic'\]"
    ):
        write_run(out, model=model, result=result, data=two_clusters, extra={"bic": 1.0})
    with pytest.raises(ValueError, match="extra: expected JSON-serialisable values"):
        write_run(out, model=model, result=result, data=two_clusters, extra={"x": object()})
    with pytest.raises(TypeError, match="result: expected a FitResult or None, got list"):
        write_run(out, model=model, result=[1.0], data=two_clusters)
    assert os.listdir(tmp_path) == []


def test_summarize(fit_gmm, two_clusters):
    model, _ = fit_gmm("spherical", "map", steps=5)
    summary = summarize(model, two_clusters)
    assert summary["n_components"] == 2 and summary["n_features"] == 2
    assert summary["log_likelihood_per_row"] == pytest.approx(
        float(model.log_prob(two_clusters).mean()), rel=1e-6
    )
    assert json.loads(json.dumps(summary, allow_nan=False)) == summary


# --- image models and held-out scores ---------------------------------------------------
IMAGE_FILES = {
    "elbo.png",
    "samples.png",
    "reconstructions.png",
    "latent.png",
    "summary.json",
    "model.pt",
}


@pytest.fixture
def fitted_vae():
    """A small VAE on 4 x 4 "images", fitted for a few steps, and held-out rows."""
    generator = torch.Generator().manual_seed(0)
    x = (torch.rand(80, 16, generator=generator) > 0.5).float()
    torch.manual_seed(0)
    vae = pyrogen.VAE((16,), latent_dim=2, hidden=(8,))
    result = pyrogen.fit(vae, x[:60], steps=5, batch_size=20, progress=False)
    return vae, result, x[:60], x[60:]


def test_write_run_of_an_image_model(tmp_path, fitted_vae):
    vae, result, train, test = fitted_vae
    labels = torch.arange(20) % 4
    path = write_run(
        tmp_path / "run",
        model=vae,
        result=result,
        data=train,
        test_data=test,
        labels=labels,
        iw_samples=7,
        seed=3,
    )
    assert {p.name for p in path.iterdir()} == IMAGE_FILES
    for name in IMAGE_FILES - {"summary.json", "model.pt"}:
        assert (path / name).read_bytes().startswith(PNG_MAGIC)
    summary = json.loads((path / "summary.json").read_text())
    assert summary["image_shape"] == [4, 4] and summary["data_shape"] == [16]
    assert summary["n_rows"] == 60 and "log_likelihood_per_row" not in summary
    assert summary["test"] == score(vae, test, iw_samples=7, seed=3)  # seeded: reproducible
    assert summary["test"]["n_rows"] == 20 and summary["test"]["iw_samples"] == 7
    assert set(summary["files"]) == IMAGE_FILES


def test_write_run_of_an_image_model_without_test_data_or_images(tmp_path, fitted_vae):
    vae, result, train, _ = fitted_vae
    path = write_run(tmp_path / "run", model=vae, result=result, data=train)
    assert {p.name for p in path.iterdir()} == IMAGE_FILES  # drawn from the training rows
    assert "test" not in json.loads((path / "summary.json").read_text())
    # Examples that are not images get no image plots, but still a latent plot.
    x = torch.rand(30, 5)
    flat = pyrogen.VAE((5,), latent_dim=2, hidden=(8,))
    result = pyrogen.fit(flat, x, steps=2, progress=False)
    path = write_run(tmp_path / "flat", model=flat, result=result, data=x)
    assert {p.name for p in path.iterdir()} == {
        "elbo.png",
        "latent.png",
        "summary.json",
        "model.pt",
    }


def test_write_run_image_arguments_are_checked(tmp_path, fitted_vae):
    vae, result, train, test = fitted_vae
    out = tmp_path / "run"
    with pytest.raises(ValueError, match=r"image_shape: expected 16 values .* got \(5, 5\)"):
        write_run(out, model=vae, result=result, data=train, image_shape=(5, 5))
    with pytest.raises(ValueError, match=r"image_shape: expected \(H, W\), .* got \(2, 2, 2, 2\)"):
        write_run(out, model=vae, result=result, data=train, image_shape=(2, 2, 2, 2))
    with pytest.raises(ValueError, match=r"labels: expected shape \(20,\), one per held-out"):
        write_run(out, model=vae, result=result, data=train, test_data=test, labels=[1, 2])
    with pytest.raises(ValueError, match=r"extra: expected keys other .* got \['test'\]"):
        write_run(out, model=vae, result=result, data=train, extra={"test": 1})
    assert os.listdir(tmp_path) == []


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
    }
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


# --- the VAE variants -------------------------------------------------------------------
def _variant(cls, **options):
    torch.manual_seed(0)
    return cls((16,), latent_dim=2, hidden=(8,), **options)


@pytest.fixture
def binary_rows():
    """40 binary 4 x 4 "images" and labels 0..2."""
    x = (torch.rand(40, 16, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    return x, torch.arange(40) % 3


def test_score_of_a_model_conditioned_on_labels(binary_rows):
    x, y = binary_rows
    cvae = _variant(pyrogen.ConditionalVAE, num_classes=3)
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


def test_score_of_a_completion_model_counts_only_the_missing_values(binary_rows):
    x, y = binary_rows
    cvae = _variant(pyrogen.ConditionalVAE, observed="top")
    stats = score(cvae, x, iw_samples=5)
    assert stats["quantity"] == "log p(x_missing | x_given)"
    ll = stats["log_likelihood_per_example"]
    assert stats["bits_per_dim"] == pytest.approx(-ll / (8 * np.log(2)), rel=1e-9)
    assert "D = 8 values per example (the missing ones)" in stats["bounds"]["bits_per_dim"]
    both = _variant(pyrogen.ConditionalVAE, num_classes=3, observed="top")
    assert score(both, x, labels=y, iw_samples=2)["quantity"] == "log p(x_missing | x_given, y)"


def test_score_of_a_classifier_and_of_a_clustering_model(binary_rows):
    x, y = binary_rows
    ssvae = _variant(pyrogen.SemiSupervisedVAE, num_classes=3)
    partly = y.clone()
    partly[:10] = -1  # unlabelled rows are left out of the accuracy
    stats = score(ssvae, x, labels=partly, iw_samples=2)
    expected = float((ssvae.predict(x[10:]) == y[10:]).double().mean())
    assert stats["accuracy"] == pytest.approx(expected) and stats["labelled_rows"] == 30
    assert stats["quantity"] == "log p(x)"  # the label summed out, whatever labels are given
    assert stats["log_likelihood_per_example"] == pytest.approx(
        score(ssvae, x, iw_samples=2)["log_likelihood_per_example"]
    )
    gmvae = _variant(pyrogen.GaussianMixtureVAE, n_components=4)
    stats = score(gmvae, x, labels=y.numpy(), iw_samples=2)
    assert stats["clustering_accuracy"] == pytest.approx(clustering_accuracy(y, gmvae.predict(x)))
    assert "Monte Carlo KL" in stats["bounds"]["elbo_per_example"]
    assert "best one-to-one matching" in stats["bounds"]["clustering_accuracy"]


@pytest.mark.parametrize(
    ("cls", "options", "files"),
    [
        (
            pyrogen.ConditionalVAE,
            {"num_classes": 3},
            {"samples.png", "class_samples.png", "reconstructions.png", "latent.png"},
        ),
        (
            pyrogen.ConditionalVAE,
            {"num_classes": 3, "observed": "bottom"},
            {"class_samples.png", "completions.png", "latent.png"},
        ),
        (
            pyrogen.SemiSupervisedVAE,
            {"num_classes": 3},
            {"samples.png", "class_samples.png", "reconstructions.png", "latent.png"},
        ),
        (
            pyrogen.GaussianMixtureVAE,
            {"n_components": 2},
            {"samples.png", "component_samples.png", "reconstructions.png", "latent.png"},
        ),
    ],
)
def test_write_run_of_the_vae_variants(tmp_path, binary_rows, cls, options, files):
    x, y = binary_rows
    model = _variant(cls, **options)
    path = write_run(
        tmp_path / "run",
        model=model,
        result=None,
        data=x[:30],
        test_data=x[30:],
        labels=y[30:],
        iw_samples=2,
    )
    assert {p.name for p in path.iterdir()} == files | {"summary.json", "model.pt"}
    summary = json.loads((path / "summary.json").read_text())
    assert summary["test"] == score(model, x[30:], labels=y[30:], iw_samples=2, seed=0)
    if cls is pyrogen.ConditionalVAE:
        with pytest.raises(ValueError, match="labels: expected the labels of the held-out"):
            write_run(tmp_path / "again", model=model, result=None, data=x, test_data=x[30:])
        assert not (tmp_path / "again").exists()
