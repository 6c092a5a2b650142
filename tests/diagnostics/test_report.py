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
from pyrogen.diagnostics import plots, report, run_plots, score, to_inference_data, write_run

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
    model = pyrogen.GaussianMixture(2, "diag")
    pyrogen.fit(model, two_clusters, steps=5, progress=False)
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
        monkeypatch.setattr(plots, name, recording(getattr(plots, name)))
    write_run(tmp_path / "run", model=model, result=result, data=two_clusters, idata=idata)
    assert titles["plot_weights_posterior"] == "point estimate of the weights (no posterior spread)"
    if max(result.losses) - min(result.losses) < 0.01:
        assert f"converged: {result.final_loss:.4f} at step {result.steps}" in titles["plot_elbo"]


def test_a_failure_leaves_nothing_behind(tmp_path, monkeypatch, fitted, two_clusters):
    model, result, idata = fitted

    def broken_plot(*args, **kwargs):
        raise RuntimeError("disk full")

    # elbo.png is written before the clusters plot fails half way through the run.
    monkeypatch.setattr(plots, "plot_clusters", broken_plot)
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


# --- image models and held-out scores ---------------------------------------------------
IMAGE_FILES = {
    "elbo.png",
    "samples.png",
    "reconstructions.png",
    "latent.png",
    "summary.json",
    "model.pt",
}


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


# --- the VAE variants -------------------------------------------------------------------
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
def test_write_run_of_the_vae_variants(tmp_path, binary_rows, variant, cls, options, files):
    x, y = binary_rows
    model = variant(cls, **options)
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


def test_the_plots_of_a_run_are_those_the_model_reports(tmp_path, monkeypatch, fitted_vae):
    vae, result, train, _ = fitted_vae
    assert set(run_plots.REPORT_PLOTS) == {
        "elbo",
        "clusters",
        "weights_posterior",
        "samples",
        "class_samples",
        "component_samples",
        "completions",
        "reconstructions",
        "latent",
        "energy",
        "sample_scatter",
    }
    monkeypatch.setattr(pyrogen.VAE, "report_plots", property(lambda self: ("latent",)))
    path = write_run(tmp_path / "latent", model=vae, result=result, data=train)
    assert {p.name for p in path.iterdir()} == {"latent.png", "summary.json", "model.pt"}
    monkeypatch.setattr(pyrogen.VAE, "report_plots", property(lambda self: ("elbo", "violin")))
    with pytest.raises(
        ValueError, match=r"model.report_plots: expected stems among .*\['violin'\]"
    ):
        write_run(tmp_path / "odd", model=vae, result=result, data=train)
    assert not (tmp_path / "odd").exists()


def test_an_energy_model_run_draws_its_landscape_for_two_columns_only(tmp_path):
    torch.manual_seed(0)
    for dims, files in ((2, {"elbo.png", "energy.png"}), (3, {"elbo.png"})):
        x = torch.randn(40, dims)
        ebm = pyrogen.EnergyDensity(dims, hidden=(8,))
        result = pyrogen.fit(ebm, x, steps=3, progress=False)
        path = write_run(tmp_path / f"energy{dims}", model=ebm, result=result, data=x)
        assert {p.name for p in path.glob("*.png")} == files
