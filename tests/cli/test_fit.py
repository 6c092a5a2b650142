"""``pyrogen fit FAMILY``: every family of the registry, its run folder and summary, and
clean errors for bad input. (Some tests go on to sample and evaluate the run they fit.)

The VAE tests train for one short epoch: they check the workflow and its numbers' relations
(which bound is below which, what evaluate reproduces), not the quality of the fit.
"""

from __future__ import annotations

import math
import re
import runpy
import sys

import arviz
import numpy as np
import pytest
import torch

import pyrogen
from pyrogen.cli import families as cli_families
from pyrogen.cli import main
from pyrogen.data.datasets import old_faithful
from pyrogen.infer import mixtures
from tests.cli.helpers import (
    DIFFUSION_QUICK,
    PNG_MAGIC,
    QUICK,
    VAE_FILES,
    VAE_QUICK,
    class_images,
    cvae_completion_run,
    exits_2_with,
    fill_in,
)
from tests.cli.helpers import summary as run_summary


def test_fit_auto_picks_two_components_on_old_faithful(auto_run):
    summary = run_summary(auto_run)
    assert summary["n_components"] == 2
    assert summary["selection"]["criterion"] == "bic"
    scores = {int(k): v for k, v in summary["selection"]["scores"].items()}
    assert sorted(scores) == list(range(1, 9))
    assert min(scores, key=scores.get) == 2
    assert summary["bic"] == pytest.approx(scores[2], rel=1e-6)  # the refit is the selected fit
    # --test-share's default holds 10% of the rows out (seeded), scored in "test"
    assert summary["columns"] == ["eruptions", "waiting"] and summary["n_rows"] == 245
    assert summary["test"]["n_rows"] == 27 and summary["inference"] == "map"
    split = "split at random (seed 0) into 245 training and 27 test rows"
    assert summary["data"] == f"Old Faithful (bundled), {split}"
    assert {p.name for p in auto_run.iterdir()} == {
        "elbo.png",
        "clusters.png",
        "weights_posterior.png",
        "summary.json",
        "inference_data.nc",
        "model.pt",
    }


def test_fit_quiet_prints_only_the_run_folder(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["fit", "gmm", "--components", "2", "--out", str(out), "--quiet", *QUICK]) == 0
    assert capsys.readouterr().out == f"{out}\n"


def test_fit_variational_prints_a_summary(tmp_path, capsys, faithful_csv):
    out = tmp_path / "run"
    argv = ["fit", "gmm", "--data", str(faithful_csv), "--columns", "waiting,eruptions"]
    argv += ["--components", "2", "--inference", "variational", "--out", str(out), *QUICK]
    argv += ["--test-share", "0"]  # every row fitted, none held out
    assert main(argv) == 0
    printed = capsys.readouterr().out
    summary = run_summary(out)
    assert summary["config"]["inference"] == "variational"
    assert summary["columns"] == ["waiting", "eruptions"]
    assert f"{faithful_csv}: 272 rows x 2 columns (waiting, eruptions)" in printed
    assert "gmm, full covariance, variational inference" in printed
    assert f"log-likelihood  {summary['log_likelihood_per_row']:.4f} nats per row" in printed
    assert f"BIC             {summary['bic']:.2f}" in printed
    assert re.search(r"component\s+weight\s+mean waiting\s+mean eruptions", printed)
    assert f"run folder      {out}" in printed
    posterior = arviz.from_netcdf(out / "inference_data.nc").posterior
    assert posterior["weights"].shape == (1, 20, 2)
    assert float(posterior["weights"].std()) > 0


def test_fit_nuts(tmp_path):
    out = tmp_path / "run"
    argv = ["fit", "gmm", "--components", "2", "--covariance", "diag", "--inference", "nuts"]
    argv += ["--steps", "30", "--num-samples", "5", "--warmup", "5", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    summary = run_summary(out)
    assert summary["inference"] == "nuts"
    assert summary["mcmc"]["num_chains"] == 2 and summary["mcmc"]["num_samples"] == 5
    idata = arviz.from_netcdf(out / "inference_data.nc")
    assert idata.posterior["locs"].shape == (2, 5, 2, 2)
    assert idata.sample_stats["diverging"].shape == (2, 5)
    assert idata.log_likelihood["obs"].shape == (2, 5, 245)  # the training rows


def test_fit_default_run_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["fit", "gmm", "--components", "2", "--quiet", *QUICK]) == 0
    printed = capsys.readouterr().out.strip()
    assert re.fullmatch(r"runs/gmm-\d{8}-\d{6}", printed)
    assert (tmp_path / printed / "model.pt").is_file()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["fit", "gmm", "--columns", "nope"], r"pyrogen: error: --columns: .* unknown \['nope'\]"),
        (
            ["fit", "gmm", "--data", "{csv}", "--columns", "eruptions,nope"],
            r"pyrogen: error: .*nope",
        ),
        (
            ["fit", "gmm", "--data", "{tmp}/missing.csv"],
            r"pyrogen: error: .*missing.csv: no such file",
        ),
        (
            ["fit", "gmm", "--components", "0"],
            r"pyrogen fit gmm: error: argument --components: expected a positive integer "
            r"or 'auto', got '0'",
        ),
        (
            ["fit", "gmm", "--covariance", "banana"],
            r"pyrogen fit gmm: error: argument --covariance: invalid choice: 'banana'",
        ),
        (
            ["fit", "gmm", "--data", "{one_row}", "--components", "1"],
            r"pyrogen: error: .*one_row.csv: expected at least 2 rows to hold --test-share 0.1 "
            r"of them out, got 1 \(--test-share 0 trains on every row\)",
        ),
        (
            ["fit", "gmm", "--test-share", "1"],
            r"pyrogen fit gmm: error: argument --test-share: expected a number in \[0, 1\), "
            r"got '1'",
        ),
        (
            ["fit", "gmm", "--components", "300", *QUICK],
            r"pyrogen: error: n_components: expected at most n_samples=245 components, got 300",
        ),
        (["fit", "gmm", "--out", "{tmp}"], r"pyrogen: error: out_dir: .* never overwritten"),
        (["fit", "banana"], r"pyrogen fit: error: argument FAMILY: invalid choice: 'banana'"),
        ([], r"pyrogen: error: the following arguments are required: COMMAND"),
    ],
)
def test_bad_input_exits_2_with_a_message(argv, message, tmp_path, capsys, table_inputs):
    argv = [fill_in(arg, table_inputs) for arg in argv]
    exits_2_with(argv, message, tmp_path, capsys)


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    for command in ("fit", "sample", "evaluate"):
        assert re.search(rf"^\s+{command}\s", printed, re.MULTILINE)
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--help"])
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    assert "gmm" in printed and "vae" in printed
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "vae", "--help"])
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    for option in ("--data-dir", "--binarize", "--latent-dim", "--iw-samples", "--limit"):
        assert option in printed


def test_python_dash_m_runs_main(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["pyrogen", "--help"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module("pyrogen", run_name="__main__")
    assert exit_info.value.code == 0
    assert "usage: pyrogen" in capsys.readouterr().out


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message where CUDA is absent")
def test_cuda_without_a_gpu_is_a_clean_error(tmp_path, capsys):
    argv = ["fit", "gmm", "--components", "2", "--device", "cuda", "--out", str(tmp_path / "r")]
    assert main(argv) == 2
    assert "pyrogen: error: device: expected an available device" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


@pytest.mark.cuda
def test_fit_on_cuda(tmp_path):
    out = tmp_path / "run"
    argv = ["fit", "gmm", "--device", "cuda", "--out", str(out), "--quiet", *QUICK]
    assert main(argv) == 0
    summary = run_summary(out)
    assert summary["training"]["device"].startswith("cuda") and summary["n_components"] == 2
    assert main(["sample", str(out), "-n", "3"]) == 0


def test_training_that_fails_numerically_exits_1(tmp_path, monkeypatch, capsys):
    def diverging_fit(*args, **kwargs):
        raise FloatingPointError("step 3: the loss is NaN/inf")

    monkeypatch.setattr(mixtures, "fit", diverging_fit)
    out = tmp_path / "run"
    assert main(["fit", "gmm", "--components", "2", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "pyrogen: error: training failed: step 3: the loss is NaN/inf" in err
    assert not out.exists()


# --- the VAE -------------------------------------------------------------------------------


def test_fit_vae_on_mnist_writes_the_report(mnist_run):
    run, printed = mnist_run
    assert {p.name for p in run.iterdir()} == VAE_FILES
    for name in VAE_FILES - {"summary.json", "model.pt"}:
        assert (run / name).read_bytes().startswith(PNG_MAGIC), name
    summary = run_summary(run)
    assert summary["family"] == "vae" and summary["config"]["latent_dim"] == 2
    assert summary["config"]["data_shape"] == [784] and summary["image_shape"] == [28, 28]
    assert summary["n_rows"] == 500 and summary["limit"] == 500 and summary["dataset"] == "mnist"
    assert summary["preprocessing"]["binarize"] == "dynamic"
    assert summary["epochs"] == 1 and summary["training"]["steps"] == math.ceil(500 / 128)
    assert summary["training"]["device"] == "cpu" and summary["training"]["time_s"] > 0

    test = summary["test"]
    assert test["n_rows"] == 10_000 and test["iw_samples"] == 5
    elbo, log_lik = test["elbo_per_example"], test["log_likelihood_per_example"]
    assert math.isfinite(elbo) and math.isfinite(log_lik) and log_lik < 0
    # L_K >= ELBO in expectation. Each mean's standard error bounds its own noise, and the
    # noise of a difference is at most the sum of the two, whatever their correlation: a
    # 4-sigma margin makes a false failure rarer than 1 in 10^4.
    errors = test["standard_errors"]
    margin = 4 * (errors["elbo_per_example"] + errors["log_likelihood_per_example"])
    assert elbo <= log_lik + margin
    assert test["bits_per_dim"] == pytest.approx(-log_lik / (784 * math.log(2)), rel=1e-9)
    assert "lower bound" in test["bounds"]["elbo_per_example"]
    assert "K = 5" in test["bounds"]["log_likelihood_per_example"]

    assert "first 500 of 60000 rows" in printed
    assert "train 500 rows, test 10000 rows of shape (784,); latent z (2,)" in printed
    assert f"test ELBO       {elbo:.4f} nats per example" in printed
    assert f"test log p(x)   {log_lik:.4f} nats per example (IWAE bound, K = 5)" in printed
    assert f"test bits/dim   {test['bits_per_dim']:.4f}" in printed
    assert f"run folder      {run}" in printed
    model = pyrogen.load(run / "model.pt")
    assert isinstance(model, pyrogen.VAE) and model.data_shape == (784,)


def test_fit_vae_in_two_data_parallel_processes(shared_data, tmp_path, capfd):
    out = tmp_path / "ddp"
    argv = ["fit", "vae", "--data-dir", str(shared_data / "mnist"), "--out", str(out)]
    assert main([*argv, *VAE_QUICK, "--devices", "2", "--strategy", "ddp"]) == 0
    assert {p.name for p in out.iterdir()} == VAE_FILES  # written once, by the first process
    training = run_summary(out)["training"]
    assert training["processes"] == 2 and training["steps"] == math.ceil(500 / 128)
    assert math.isfinite(run_summary(out)["test"]["elbo_per_example"])
    assert "in 2 data-parallel processes" in capfd.readouterr().out  # the first process's
    assert pyrogen.load(out / "model.pt").config["latent_dim"] == 2


def test_fit_vae_on_an_npy_array(npy_run, grey_images, tmp_path, capsys):
    assert {p.name for p in npy_run.iterdir()} == VAE_FILES
    summary = run_summary(npy_run)
    assert summary["config"]["data_shape"] == [1, 8, 8] and summary["config"]["encoder"] == "conv"
    assert summary["image_shape"] == [8, 8] and summary["dataset"] is None
    assert summary["n_rows"] == 108 and summary["test"]["n_rows"] == 12  # 90/10 split
    assert "split at random (seed 0) into 108 training and 12 test rows" in summary["data"]
    assert summary["preprocessing"]["binarize"] == "threshold"
    assert summary["training"]["steps"] == 2 * math.ceil(108 / 32)

    argv = ["evaluate", str(npy_run), "--data", str(grey_images), "--iw-samples", "7"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert f"{grey_images}, all 120 rows, scored as examples of shape (1, 8, 8)" in printed
    assert re.search(r"log p\(x\)\s+-?\d+\.\d{4} nats per example \(IWAE bound, K = 7\)", printed)
    assert "--binarize threshold" in printed  # the run's binarization, applied again

    png = tmp_path / "grid.png"
    assert main(["sample", str(npy_run), "-n", "9", "--out", str(png)]) == 0
    assert png.read_bytes().startswith(PNG_MAGIC)
    npy = tmp_path / "rows.npy"
    assert main(["sample", str(npy_run), "-n", "9", "--out", str(npy)]) == 0
    assert np.load(npy).shape == (9, 1, 8, 8)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["fit", "vae"], r"pyrogen: error: --data-dir, --data: expected one of them .*got neither"),
        (
            ["fit", "vae", "--data", "{bytes}"],
            r"pyrogen: error: .*bytes.npy: expected values in \[0, 1\] for a bernoulli "
            r"likelihood, got values in \[0, 255\]",
        ),
        (
            ["fit", "vae", "--data-dir", "{tmp}"],
            r"pyrogen: error: --data-dir: expected the mnist files in .*t10k-images-idx3-ubyte"
            r".*no such file",
        ),
        (
            ["fit", "vae", "--data-dir", "{tmp}", "--dataset", "binarized-mnist"],
            r"pyrogen: error: --data-dir: .*binarized_mnist.npz: no such file",
        ),
        (
            ["fit", "vae", "--data", "{table}", "--encoder", "conv"],
            r"pyrogen: error: --encoder: expected images, .* got examples of shape \(5,\)",
        ),
        (
            ["fit", "vae", "--data", "{images}", "--data-dir", "{tmp}"],
            r"pyrogen: error: --data, --data-dir: expected one of them, got both",
        ),
        (
            ["fit", "vae", "--data", "{images}", "--steps", "3", "--epochs", "2"],
            r"pyrogen: error: --steps, --epochs: expected at most one of them, got both",
        ),
        (
            [
                "fit",
                "vae",
                "--data-dir",
                "{tmp}",
                "--dataset",
                "binarized-mnist",
                "--binarize",
                "dynamic",
            ],
            r"pyrogen: error: --binarize: expected none for --dataset binarized-mnist",
        ),
        (
            ["fit", "vae", "--data", "{images}", "--beta", "0"],
            r"pyrogen fit vae: error: argument --beta: expected a positive number, got '0'",
        ),
        (
            ["fit", "vae", "--data", "{images}", "--dataset", "binarized-mnist"],
            r"pyrogen: error: --dataset: expected --data-dir with it",
        ),
    ],
)
def test_vae_bad_input_exits_2_with_a_message(argv, message, tmp_path, capsys, vae_inputs):
    argv = [fill_in(arg, vae_inputs) for arg in argv]
    exits_2_with(argv, message, tmp_path, capsys)


@pytest.mark.cuda
def test_fit_vae_on_cuda(grey_images, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["fit", "vae", "--data", str(grey_images), "--device", "cuda", "--binarize", "dynamic"]
    argv += ["--epochs", "2", "--batch-size", "32", "--iw-samples", "5", "--out", str(out)]
    assert main([*argv, "--quiet"]) == 0
    summary = run_summary(out)
    assert summary["training"]["device"].startswith("cuda") and summary["training"]["steps"] == 8
    assert {p.name for p in out.iterdir()} == VAE_FILES
    capsys.readouterr()
    assert main(["evaluate", str(out), "--data", str(grey_images), "--device", "cuda"]) == 0
    assert "IWAE bound, K = 5" in capsys.readouterr().out


# --- the VAE variants: cvae, ssvae, gmvae --------------------------------------------------


def test_fit_cvae_conditions_on_the_labels_of_an_npz(variant_run, labelled_npz, tmp_path, capsys):
    run, printed = variant_run("cvae", "cvae")
    files = {"samples.png", "class_samples.png", "reconstructions.png", "latent.png"}
    assert {p.name for p in run.iterdir()} == files | {"elbo.png", "summary.json", "model.pt"}
    assert (run / "class_samples.png").read_bytes().startswith(PNG_MAGIC)
    summary = run_summary(run)
    assert summary["family"] == "cvae" and summary["config"]["num_classes"] == 3
    assert summary["config"]["observed"] is None
    assert summary["labels"] == f"{labelled_npz}['y']: the condition y, classes 0..2"
    test = summary["test"]
    assert test["quantity"] == "log p(x | y)" and test["n_rows"] == 9
    assert f"test ELBO       {test['elbo_per_example']:.4f} nats per example (a lower bound " in (
        printed
    )
    assert "on log p(x | y))" in printed and "cvae, 3 classes, mlp encoder" in printed
    assert (
        f"test log-lik.   {test['log_likelihood_per_example']:.4f} nats per example: "
        "log p(x | y) (IWAE bound, K = 3)" in printed
    )

    assert main(["evaluate", str(run), "--data", str(labelled_npz)]) == 0
    printed = capsys.readouterr().out
    assert re.search(
        r"log p\(x \| y\)\s+-?\d+\.\d{4} nats per example \(IWAE bound, K = 3\)", printed
    )
    assert f"labels          {labelled_npz}['y'] (the condition y)" in printed

    png, npy = tmp_path / "grid.png", tmp_path / "rows.npy"
    assert main(["sample", str(run), "-n", "6", "--mean", "--out", str(png)]) == 0
    assert png.read_bytes().startswith(PNG_MAGIC)
    assert main(["sample", str(run), "-n", "4", "--label", "2", "--out", str(npy)]) == 0
    assert np.load(npy).shape == (4, 64)


def test_fit_cvae_completes_the_missing_half(variant_run, labelled_npz, tmp_path, capsys):
    run, printed = cvae_completion_run(variant_run)
    files = {"class_samples.png", "completions.png", "latent.png", "elbo.png"}
    assert {p.name for p in run.iterdir()} == files | {"summary.json", "model.pt"}
    summary = run_summary(run)
    assert summary["config"]["observed"] == "top" and summary["config"]["num_classes"] == 3
    test = summary["test"]
    assert test["quantity"] == "log p(x_missing | x_given, y)"
    assert test["bits_per_dim"] == pytest.approx(
        -test["log_likelihood_per_example"] / (32 * math.log(2)), rel=1e-9
    )  # the 32 missing values of 64
    assert "given the top half" in printed and "log p(x_missing | x_given, y)" in printed

    npy = tmp_path / "completed.npy"
    argv = ["sample", str(run), "-n", "5", "--data", str(labelled_npz), "--out", str(npy)]
    assert main(argv) == 0
    completed = np.load(npy).reshape(5, 8, 8)
    # The given halves are the data's, binarized as in the run (dynamic, the run's seed 0).
    images, _ = class_images()
    binary = torch.bernoulli(torch.from_numpy(images), generator=torch.Generator().manual_seed(0))
    np.testing.assert_array_equal(completed[:, :4], binary[:5, :4].numpy())


def test_fit_ssvae_keeps_a_balanced_few_labels_and_reports_accuracy(
    variant_run, labelled_npz, capsys
):
    run, printed = variant_run("ssvae", "ssvae", "--labelled", "7")
    files = {"samples.png", "class_samples.png", "reconstructions.png", "latent.png"}
    assert {p.name for p in run.iterdir()} == files | {"elbo.png", "summary.json", "model.pt"}
    summary = run_summary(run)
    assert summary["config"]["num_classes"] == 3
    assert (
        "7 of the 81 training rows keep their labels (2 to 3 per class, chosen at random "
        in (summary["labels"])
    )
    test = summary["test"]
    assert 0 <= test["accuracy"] <= 1 and test["labelled_rows"] == 9
    assert test["quantity"] == "log p(x)" and test["iw_samples"] == 3
    assert f"test accuracy   {test['accuracy']:.4f} of 9 labelled rows" in printed

    assert main(["evaluate", str(run), "--data", str(labelled_npz), "--iw-samples", "2"]) == 0
    printed = capsys.readouterr().out
    assert re.search(r"accuracy\s+\d\.\d{4} of 90 labelled rows", printed)
    assert re.search(r"log p\(x\)\s+-?\d+\.\d{4} nats per example \(IWAE bound, K = 2\)", printed)


def test_fit_gmvae_initialises_the_components_after_the_warm_up(
    variant_run, monkeypatch, labelled_npz
):
    calls = []
    original = pyrogen.GaussianMixtureVAE.init_components

    def spy(self, x, *, seed=0):
        calls.append(tuple(x.shape))
        return original(self, x, seed=seed)

    monkeypatch.setattr(pyrogen.GaussianMixtureVAE, "init_components", spy)
    run, printed = variant_run("gmvae", "gmvae", "--components", "3", "--warmup-epochs", "1")
    assert calls == [(81, 64)]  # once, on the training rows
    files = {"samples.png", "component_samples.png", "reconstructions.png", "latent.png"}
    assert {p.name for p in run.iterdir()} == files | {"elbo.png", "summary.json", "model.pt"}
    summary = run_summary(run)
    assert summary["n_components"] == 3 and summary["training"]["steps"] == 6
    assert "after 1 warm-up epoch(s)" in summary["component_init"]
    test = summary["test"]
    assert 1 / 3 <= test["clustering_accuracy"] <= 1 and test["labelled_rows"] == 9
    assert f"test clustering {test['clustering_accuracy']:.4f} accuracy on 9" in printed
    assert "components      3; initialised from a diagonal Gaussian mixture" in printed


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["fit", "ssvae", "--data", "{npz}", "--labelled", "1000"],
            r"pyrogen: error: --labelled: expected at most 81 \(the training rows with a "
            r"label\), got 1000",
        ),
        (
            ["fit", "cvae", "--data", "{images}", "--labels", "{short}"],
            r"pyrogen: error: .*short.npy: expected 90 labels, one per row of .*images.npy, "
            r"got 10",
        ),
        (
            ["fit", "cvae", "--data", "{images}", "--labels", "{negative}"],
            r"pyrogen: error: .*negative.npy: expected labels in 0..2, got -1 in 1 row\(s\)",
        ),
        (
            ["fit", "cvae", "--data", "{images}", "--labels", "{halves}"],
            r"pyrogen: error: .*halves.npy: expected integer class labels, got 0.5 at row 0",
        ),
        (
            ["fit", "cvae", "--data", "{npz}", "--num-classes", "2"],
            r"pyrogen: error: .*classes.npz\['y'\]: expected labels in 0..1 \(--num-classes "
            r"2\), got 2 in 30 row\(s\)",
        ),
        (
            ["fit", "cvae", "--data", "{images}", "--labels", "{same}"],
            r"pyrogen: error: .*same.npy: expected labels of every class 0..200 \(C is the "
            r"largest label \+ 1\), got none of 200 of them \(0, 1, 2, 3, 4, \.\.\.\)",
        ),
        (
            ["fit", "cvae", "--data", "{npz}", "--labels", "nope"],
            r"pyrogen: error: --labels: expected a labels file or an array of .*classes.npz "
            r"\('x', 'y'\), got 'nope'",
        ),
        (
            ["fit", "cvae", "--data", "{images}"],
            r"pyrogen: error: --observed, --labels: expected a condition .*got neither",
        ),
        (
            ["fit", "cvae", "--data", "{npz}", "--no-labels", "--labels", "y"],
            r"pyrogen: error: --no-labels, --labels: expected at most one of them, got both",
        ),
        (
            ["fit", "ssvae", "--data", "{images}"],
            r"pyrogen: error: --labels: expected labels for the semi-supervised VAE",
        ),
        (
            ["fit", "ssvae", "--data", "{npz}", "--labelled-share", "1.5"],
            r"pyrogen fit ssvae: error: argument --labelled-share: expected a number in "
            r"\(0, 1\), got '1.5'",
        ),
        (
            ["fit", "gmvae", "--data", "{npz}", "--epochs", "2", "--warmup-epochs", "2"],
            r"pyrogen: error: --warmup-epochs: expected fewer epochs than the run's 2",
        ),
        (
            ["fit", "cvae", "--data-dir", "{tmp}", "--labels", "{short}"],
            r"pyrogen: error: --labels: expected none with --data-dir",
        ),
    ],
)
def test_variants_bad_input_exits_2_with_a_message(argv, message, tmp_path, capsys, variant_inputs):
    argv = [fill_in(arg, variant_inputs) for arg in argv]
    exits_2_with(argv, message, tmp_path, capsys, once=True)


# --- the flow ------------------------------------------------------------------------------


def test_fit_flow_on_a_csv_then_evaluate_and_sample(tmp_path, faithful_csv, capsys):
    out = tmp_path / "flow"
    argv = ["fit", "flow", "--data", str(faithful_csv), "--out", str(out), "--quiet"]
    assert main([*argv, "--steps", "60", "--transforms", "2", "--hidden", "16"]) == 0
    summary = run_summary(out)
    model = pyrogen.load(out / "model.pt")
    exact = float(model.log_prob(old_faithful()).mean())
    assert summary["family"] == "flow" and math.isfinite(exact)
    capsys.readouterr()
    assert main(["evaluate", str(out), "--data", str(faithful_csv)]) == 0
    assert f"{exact:.4f} nats per row" in capsys.readouterr().out
    assert main(["sample", str(out), "-n", "4"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 5  # header and 4 rows


def test_fit_flow_stops_on_held_out_rows(tmp_path, faithful_csv):
    out = tmp_path / "flow"
    argv = ["fit", "flow", "--data", str(faithful_csv), "--out", str(out), "--quiet"]
    options = ["--steps", "3000", "--transforms", "2", "--hidden", "16", "--lr", "0.01"]
    assert main([*argv, *options, "--validation-share", "0.25", "--patience", "5"]) == 0
    training = run_summary(out)["training"]
    held_out = training["validation_losses"]
    # full batch: one held-out score per step; stopped 5 steps after the best one
    assert training["stopped_early"] and training["steps"] < 3000
    assert [step for step, _ in held_out] == list(range(1, training["steps"] + 1))
    assert training["best_loss"] == min(loss for _, loss in held_out)
    assert training["steps"] - training["best_step"] == 5


@pytest.mark.parametrize(
    "options, message",
    [
        (["--validation-share", "1.5"], "expected a number in \\(0, 1\\)"),
        (["--logit", "0.05"], r"x: expected values in \[0, 1\]"),
        (["--hidden", "16,zero"], "expected positive integers separated by commas"),
        (["--lr", "-1"], "--lr"),
    ],
)
def test_fit_flow_bad_input_exits_2(options, message, tmp_path, faithful_csv, capsys):
    argv = ["fit", "flow", "--data", str(faithful_csv), "--out", str(tmp_path / "f"), "--quiet"]
    assert main([*argv, "--steps", "2", *options]) == 2
    error = capsys.readouterr().err
    assert re.search(message, error) and error.count("error:") == 1
    assert not (tmp_path / "f").exists()


# --- energy-based models ---------------------------------------------------------------------


def test_fit_energy_on_a_csv_then_evaluate_and_sample(tmp_path, faithful_csv, capsys):
    out = tmp_path / "energy"
    argv = ["fit", "energy", "--data", str(faithful_csv), "--out", str(out), "--quiet"]
    assert main([*argv, "--steps", "20", "--hidden", "16", "--objective", "nce"]) == 0
    summary = run_summary(out)
    assert summary["family"] == "energy" and summary["config"]["objective"] == "nce"
    assert summary["log_partition_method"] == "quadrature"  # 2-D: exact nats
    model = pyrogen.load(out / "model.pt")
    exact = float(model.log_prob(old_faithful()).mean())
    # the held-out rows (--test-share's default, seeded) scored exactly
    table = pyrogen.data.load_table(faithful_csv)[0]
    held_out = pyrogen.data.split_train_test(table, seed=0, test_fraction=0.1).test
    test = summary["test"]
    assert (
        test["n_rows"] == len(held_out) == 27
        and "by quadrature" in test["bounds"]["log_likelihood_per_example"]
    )
    held_out_nats = float(model.log_prob(held_out).mean())
    assert test["log_likelihood_per_example"] == pytest.approx(held_out_nats, abs=1e-5)
    capsys.readouterr()
    assert main(["evaluate", str(out), "--data", str(faithful_csv)]) == 0
    assert f"{exact:.4f} nats per row" in capsys.readouterr().out
    assert main(["sample", str(out), "-n", "4"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 5  # header and 4 rows


def test_fit_energy_bad_objective_exits_2(tmp_path, faithful_csv, capsys):
    argv = ["fit", "energy", "--data", str(faithful_csv), "--out", str(tmp_path / "e")]
    assert main([*argv, "--objective", "ml", "--quiet"]) == 2
    assert "ml" in capsys.readouterr().err
    assert not (tmp_path / "e").exists()


# --- diffusion -----------------------------------------------------------------------------


def test_fit_diffusion_on_labelled_images_then_sample_and_evaluate(labelled_npz, tmp_path, capsys):
    out = tmp_path / "diffusion"
    argv = ["fit", "diffusion", "--data", str(labelled_npz), "--likelihood", "discretized"]
    argv += ["--conditional", "--channels", "8", "--out", str(out), *DIFFUSION_QUICK]
    assert main(argv) == 0
    assert {p.name for p in out.iterdir()} == {
        "samples.png",
        "class_samples.png",
        "elbo.png",
        "summary.json",
        "model.pt",
    }
    summary = run_summary(out)
    test = summary["test"]
    assert summary["family"] == "diffusion" and summary["config"]["num_classes"] == 3
    assert test["quantity"] == "log p(x | y)" and test["step_samples"] == 1
    parts = test["reconstruction_per_example"] - test["prior_per_example"]
    assert test["elbo_per_example"] == pytest.approx(parts - test["diffusion_per_example"])
    assert test["bits_per_dim"] == pytest.approx(
        -test["elbo_per_example"] / (64 * math.log(2)), rel=1e-9
    )
    capsys.readouterr()
    assert main(["evaluate", str(out), "--data", str(labelled_npz)]) == 0
    printed = capsys.readouterr().out
    for name in ("ELBO", "recon.", "prior KL", "diff. KLs", "bits/dim"):
        assert re.search(rf"^{re.escape(name)}\s+-?\d+\.\d{{4}}", printed, re.M), name
    grid = tmp_path / "grid.png"
    argv = ["sample", str(out), "-n", "6", "--steps", "5", "--guidance", "2", "--out", str(grid)]
    assert main(argv) == 0
    assert grid.read_bytes().startswith(PNG_MAGIC)
    array = tmp_path / "draws.npy"
    assert main(["sample", str(out), "-n", "4", "--method", "ancestral", "--out", str(array)]) == 0
    draws = np.load(array)
    assert draws.shape == (4, 8, 8) and np.allclose(draws * 255, np.round(draws * 255))


def test_fit_diffusion_on_a_table(faithful_csv, tmp_path, capsys):
    out = tmp_path / "table"
    argv = ["fit", "diffusion", "--data", str(faithful_csv), "--hidden", "16,16"]
    argv += ["--columns", "eruptions,waiting"]
    assert main([*argv, "--out", str(out), *DIFFUSION_QUICK]) == 0
    summary = run_summary(out)
    assert summary["config"]["likelihood"] == "gaussian"
    assert summary["config"]["denoiser"] == "mlp"
    capsys.readouterr()
    assert main(["sample", str(out), "-n", "3", "--steps", "4"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "eruptions,waiting" and len(lines) == 4


def test_latent_diffusion_refuses_a_run_that_is_not_a_vae(auto_run, grey_images, tmp_path, capsys):
    argv = ["fit", "diffusion", "--data", str(grey_images), "--autoencoder", str(auto_run)]
    assert main([*argv, "--out", str(tmp_path / "x"), *DIFFUSION_QUICK]) == 2
    assert "--autoencoder: expected a run or model file of a vae model, got a gmm model" in (
        capsys.readouterr().err
    )
    assert list(tmp_path.iterdir()) == []


def test_fit_latent_diffusion_on_a_vae_run(npy_run, grey_images, tmp_path, capsys):
    out = tmp_path / "latent"
    argv = ["fit", "diffusion", "--data", str(grey_images), "--autoencoder", str(npy_run)]
    argv += ["--binarize", "threshold", "--hidden", "16", "--out", str(out), *DIFFUSION_QUICK]
    assert main(argv) == 0
    summary = run_summary(out)
    assert summary["config"]["autoencoder"]["family"] == "vae"
    assert summary["config"]["likelihood"] == "gaussian"
    assert summary["autoencoder"] == str(npy_run)
    assert "samples.png" in summary["files"]
    model = pyrogen.load(out / "model.pt")
    assert model.sample(3, method="ddim", steps=4).shape == (3, 1, 8, 8)  # decoded images
    assert main([*argv[:5], str(tmp_path / "other.pt"), "--out", str(tmp_path / "x")]) == 2
    assert "other.pt" in capsys.readouterr().err


@pytest.mark.parametrize(
    "options, message",
    [
        (["--binarize", "threshold", "--likelihood", "discretized"], "--binarize: threshold"),
        (["--conditional"], "--conditional: expected labels in the data"),
        (["--schedule", "learned", "--objective", "simple"], "objective: 'simple' is not"),
    ],
)
def test_fit_diffusion_bad_input_exits_2(options, message, grey_images, tmp_path, capsys):
    argv = ["fit", "diffusion", "--data", str(grey_images), "--out", str(tmp_path / "d")]
    assert main([*argv, *DIFFUSION_QUICK, *options]) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("error:") == 1
    assert not (tmp_path / "d").exists()


# --- the registry -------------------------------------------------------------------------------
def test_fit_offers_every_family_of_the_registry_with_its_constructor_arguments(capsys):
    import inspect

    from pyrogen.cli import build_parser
    from pyrogen.cli.options import FROM_DATA, flag
    from pyrogen.models import REGISTRY

    parser = build_parser()
    fit_command = next(
        action.choices["fit"] for action in parser._actions if getattr(action, "choices", None)
    )
    families = next(a.choices for a in fit_command._actions if getattr(a, "choices", None))
    assert set(families) == set(REGISTRY)
    for name, family in REGISTRY.items():
        offered = {option for action in families[name]._actions for option in action.option_strings}
        spec = cli_families.spec_of(name)
        for argument, parameter in inspect.signature(family).parameters.items():
            annotation = str(parameter.annotation)
            if (
                argument in FROM_DATA
                or argument in spec.arguments
                and spec.arguments[argument] is None
                or "str" not in annotation
                and (
                    not any(
                        kind in annotation for kind in ("int", "float", "bool", "Sequence[int]")
                    )
                )
            ):
                continue
            assert flag(argument) in offered, (name, argument)
    with pytest.raises(SystemExit):
        main(["fit", "vae", "--help"])
    assert "--num-particles" in capsys.readouterr().out  # and its old spelling --particles:
    assert main(["fit", "vae", "--particles", "0"]) == 2
    assert "argument --particles: expected a positive integer" in capsys.readouterr().err


def test_a_family_without_a_spec_is_fitted_from_its_signature(
    monkeypatch, faithful_csv, tmp_path, capsys
):
    """A family the command line knows nothing of gets ``pyrogen fit`` from its constructor."""
    from pyrogen.models import REGISTRY

    class Tiny(pyrogen.FlowDensity):
        """A flow density registered under a new name."""

        family = "tiny"

    monkeypatch.setitem(REGISTRY, "tiny", Tiny)
    assert "tiny" not in cli_families.SPECS
    out = tmp_path / "tiny"
    argv = ["fit", "tiny", "--data", str(faithful_csv), "--steps", "3", "--flow", "maf"]
    assert main([*argv, "--transforms", "1", "--hidden", "8,8", "--out", str(out), "--quiet"]) == 0
    summary = run_summary(out)
    assert summary["family"] == "tiny" and summary["config"]["flow"] == "maf"
    assert summary["config"]["hidden"] == [8, 8] and summary["config"]["transforms"] == 1
    assert summary["training"]["steps"] == 3 and summary["n_rows"] == 245
