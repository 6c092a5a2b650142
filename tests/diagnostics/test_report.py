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
from pyrogen.diagnostics import report, summarize, to_inference_data, write_run

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
