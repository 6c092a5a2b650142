"""``pyrogen evaluate``: exact log-likelihoods and bounds of data under a fitted model, in one
process or several, and clean errors for bad input."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import pyrogen
from pyrogen.cli import main
from pyrogen.data.datasets import old_faithful
from tests.cli.helpers import (
    exits_2_with,
    fill_in,
)
from tests.cli.helpers import summary as run_summary


def test_evaluate(auto_run, faithful_csv, capsys):
    assert main(["evaluate", str(auto_run), "--data", str(faithful_csv)]) == 0
    printed = capsys.readouterr().out
    model = pyrogen.load(auto_run / "model.pt")
    x = old_faithful()
    assert f"log-likelihood  {float(model.log_prob(x).mean()):.4f} nats per row" in printed
    assert f"BIC             {model.bic(x):.2f}" in printed
    assert "gmm, full covariance, map inference" in printed
    argv = ["evaluate", str(auto_run / "model.pt"), "--data", str(faithful_csv)]
    assert main([*argv, "--columns", "eruptions,waiting"]) == 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["evaluate", "{run}", "--data", "{wide}"],
            r"pyrogen: error: x: expected 2 columns, got 3",
        ),
    ],
)
def test_bad_input_exits_2_with_a_message(argv, message, tmp_path, capsys, table_inputs):
    argv = [fill_in(arg, table_inputs) for arg in argv]
    exits_2_with(argv, message, tmp_path, capsys)


def test_evaluate_vae_reproduces_the_run(mnist_run, shared_data, capsys):
    run, _ = mnist_run
    assert main(["evaluate", str(run), "--data-dir", str(shared_data / "mnist")]) == 0
    printed = capsys.readouterr().out
    test = run_summary(run)["test"]  # same seed, K and binarized test set as the run
    assert f"ELBO            {test['elbo_per_example']:.4f} nats per example" in printed
    assert (
        f"log p(x)        {test['log_likelihood_per_example']:.4f} nats per example "
        "(IWAE bound, K = 5)" in printed
    )
    assert f"bits/dim        {test['bits_per_dim']:.4f}" in printed
    assert "test split (10000 rows)" in printed and "--binarize dynamic" in printed


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["evaluate", "{vae}"], r"pyrogen: error: --data-dir, --data: expected one of them"),
        (
            ["evaluate", "{vae}", "--data", "{table}"],
            r"pyrogen: error: .*table.npy: expected examples of shape \(1, 8, 8\)",
        ),
        (["evaluate", "{gmm}"], r"pyrogen: error: --data: expected a data file"),
        (
            ["evaluate", "{gmm}", "--data", "{csv}", "--iw-samples", "5"],
            r"pyrogen: error: --iw-samples: expected no value for a gmm model",
        ),
    ],
)
def test_vae_bad_input_exits_2_with_a_message(argv, message, tmp_path, capsys, vae_inputs):
    argv = [fill_in(arg, vae_inputs) for arg in argv]
    exits_2_with(argv, message, tmp_path, capsys)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["evaluate", "{cvae_top}", "--data", "{images}"],
            r"pyrogen: error: --labels: expected the labels of the data for a cvae conditioned "
            r"on 3 classes \(it is scored on log p\(x_missing \| x_given, y\)",
        ),
        (
            ["evaluate", "{vae}", "--data", "{images}", "--labels", "{short}"],
            r"pyrogen: error: --labels: expected none for a vae model",
        ),
    ],
)
def test_variants_bad_input_exits_2_with_a_message(argv, message, tmp_path, capsys, variant_inputs):
    argv = [fill_in(arg, variant_inputs) for arg in argv]
    exits_2_with(argv, message, tmp_path, capsys, once=True)


def test_sample_and_evaluate_in_two_processes(
    auto_run, faithful_csv, npy_run, grey_images, tmp_path, capsys
):
    """Each --devices 2 command spawns 2 processes (a few seconds): one of each kind."""
    import pyro

    # Exact log-likelihood: the rows' scores are those of one process, so the lines too.
    argv = ["evaluate", str(auto_run), "--data", str(faithful_csv)]
    assert main(argv) == 0
    one = capsys.readouterr().out
    assert main([*argv, "--devices", "2"]) == 0
    two = capsys.readouterr().out
    number = r"-?\d+\.\d+"
    assert re.sub(number, "#", two) == re.sub(number, "#", one)
    values = [float(v) for v in re.findall(number, two)]
    assert values == pytest.approx([float(v) for v in re.findall(number, one)], abs=0.011)

    # Draws: process r draws its share of the 7 rows (4, 3) seeded with --seed + r.
    npy = tmp_path / "draws.npy"
    argv = ["sample", str(auto_run), "-n", "7", "--seed", "3", "--out", str(npy)]
    assert main([*argv, "--devices", "2"]) == 0
    model = pyrogen.load(auto_run / "model.pt")
    pyro.set_rng_seed(3)
    first = model.sample(4)
    pyro.set_rng_seed(4)
    expected = torch.cat([first, model.sample(3)])
    np.testing.assert_array_equal(np.load(npy), expected.numpy())

    # Bounds: process r's Monte Carlo draws (ELBO, then the K = 5 IWAE bound) from the run's
    # seed 0 + r, on its share of the 120 images.
    argv = ["evaluate", str(npy_run), "--data", str(grey_images), "--devices", "2"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    vae = pyrogen.load(npy_run / "model.pt")
    x = torch.from_numpy(np.load(grey_images) > 0.5).float().reshape(120, 1, 8, 8)
    elbo, bound = [], []
    for rank, rows in enumerate((slice(0, 60), slice(60, 120))):
        pyro.set_rng_seed(rank)
        with torch.no_grad():
            elbo.append(vae.elbo(x[rows]))
            bound.append(vae.log_likelihood(x[rows], num_samples=5))
    elbo, bound = torch.cat(elbo).double().mean(), torch.cat(bound).double().mean()
    assert f"ELBO            {elbo:.4f} nats per example" in printed
    assert f"log p(x)        {bound:.4f} nats per example (IWAE bound, K = 5)" in printed
    assert f"bits/dim        {-bound / (64 * math.log(2)):.4f}" in printed

    assert main([*argv[:-1], "0"]) == 2
    assert "--devices: expected a positive integer" in capsys.readouterr().err


@pytest.fixture(scope="module")
def autoregressive_run(grey_images, tmp_path_factory) -> Path:
    """``pyrogen fit autoregressive`` (a small PixelCNN) on thresholded 8 x 8 images."""
    out = tmp_path_factory.mktemp("autoregressive") / "run"
    argv = ["fit", "autoregressive", "--data", str(grey_images), "--binarize", "threshold"]
    argv += ["--steps", "5", "--batch-size", "16", "--channels", "4", "--layers", "2"]
    assert main([*argv, "--out", str(out), "--quiet"]) == 0
    return out


def test_evaluate_an_exact_image_model_reads_images_and_prints_bits_per_dim(
    autoregressive_run, grey_images, capsys
):
    capsys.readouterr()
    argv = ["evaluate", str(autoregressive_run), "--data", str(grey_images)]
    assert main([*argv, "--binarize", "threshold"]) == 0
    printed = capsys.readouterr().out
    model = pyrogen.load(autoregressive_run / "model.pt")
    x = (torch.as_tensor(np.load(grey_images)) > 0.5).float()
    nats = float(model.log_prob(x).mean())
    assert f"log p(x)        {nats:.4f} nats per example (exact)" in printed
    assert f"bits/dim        {-nats / (64 * math.log(2)):.4f} (exact)" in printed
    assert "--binarize threshold" in printed and "120 rows" in printed
    # the run's preprocessing (--binarize threshold) by default: the same numbers
    assert main(["evaluate", str(autoregressive_run), "--data", str(grey_images)]) == 0
    assert capsys.readouterr().out == printed


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--iw-samples", "5"], r"--iw-samples: expected none for a autoregressive model \(its "),
        (["--step-samples", "2"], r"--step-samples: expected none .*log-likelihood is exact"),
        (["--labels", "{npy}"], r"--labels: expected none for a autoregressive model"),
    ],
)
def test_exact_image_model_refuses_the_options_of_bounds(
    options, message, autoregressive_run, grey_images, tmp_path, capsys
):
    argv = ["evaluate", str(autoregressive_run), "--data", str(grey_images), *options]
    exits_2_with([fill_in(a, {"{npy}": str(grey_images)}) for a in argv], message, tmp_path, capsys)


def test_evaluate_vae_prints_the_kl_term(npy_run, grey_images, capsys):
    capsys.readouterr()
    argv = ["evaluate", str(npy_run), "--data", str(grey_images), "--binarize", "threshold"]
    assert main([*argv, "--iw-samples", "3"]) == 0
    printed = capsys.readouterr().out
    recon = re.search(r"recon\.\s+(-?[\d.]+) nats per example", printed)
    kl = re.search(r"KL\s+(-?[\d.]+) nats per example", printed)
    elbo = re.search(r"ELBO\s+(-?[\d.]+) nats per example", printed)
    assert recon and kl and elbo, printed
    assert float(kl.group(1)) >= 0
    assert float(recon.group(1)) - float(kl.group(1)) == pytest.approx(
        float(elbo.group(1)), abs=2e-4
    )
    assert "(IWAE bound, K = 3)" in printed and "bits/dim" in printed
