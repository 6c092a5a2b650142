"""The ``pyrogen`` command line: fit / sample / evaluate, and clean errors for bad input.

The VAE tests train for one short epoch: they check the workflow and its numbers' relations
(which bound is below which, what evaluate reproduces), not the quality of the fit.
"""

from __future__ import annotations

import json
import math
import re
import runpy
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display in tests

import arviz  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import pyrogen  # noqa: E402
from pyrogen.cli import gmm as cli_gmm  # noqa: E402
from pyrogen.cli import labels as cli_labels  # noqa: E402
from pyrogen.cli import main  # noqa: E402
from pyrogen.cli import vae as cli_vae  # noqa: E402
from pyrogen.data.datasets import old_faithful  # noqa: E402

# Small settings that keep every command fast; they are not what a real run would use.
QUICK = ["--steps", "30", "--num-samples", "20"]
VAE_QUICK = ["--limit", "500", "--epochs", "1", "--iw-samples", "5", "--latent-dim", "2"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
VAE_FILES = {
    "elbo.png",
    "samples.png",
    "reconstructions.png",
    "latent.png",
    "summary.json",
    "model.pt",
}
# Runs that later tests reuse: (run folder, what it printed), made once per session.
_VAE_RUNS: dict[str, tuple[Path, str]] = {}


@pytest.fixture(scope="module")
def auto_run(tmp_path_factory) -> Path:
    """``pyrogen fit gmm`` with its defaults (Old Faithful, K chosen by BIC), run once."""
    out = tmp_path_factory.mktemp("cli") / "auto"
    assert main(["fit", "gmm", "--out", str(out), "--quiet", *QUICK]) == 0
    return out


@pytest.fixture
def faithful_csv(tmp_path) -> Path:
    path = tmp_path / "faithful.csv"
    np.savetxt(path, old_faithful().numpy(), delimiter=",", header="eruptions,waiting", comments="")
    return path


@pytest.fixture
def mnist_run(shared_data, tmp_path_factory, capsys) -> tuple[Path, str]:
    """``pyrogen fit vae`` on the shared MNIST (500 training rows, one epoch), run once."""
    if "mnist" not in _VAE_RUNS:
        out = tmp_path_factory.mktemp("vae") / "mnist"
        argv = ["fit", "vae", "--data-dir", str(shared_data / "mnist"), "--out", str(out)]
        assert main([*argv, *VAE_QUICK]) == 0
        _VAE_RUNS["mnist"] = (out, capsys.readouterr().out)
    return _VAE_RUNS["mnist"]


@pytest.fixture(scope="module")
def grey_images(tmp_path_factory) -> Path:
    """120 random 8 x 8 images with values in [0, 1], as an NPY file."""
    path = tmp_path_factory.mktemp("npy") / "images.npy"
    np.save(path, np.random.default_rng(0).random((120, 8, 8), dtype=np.float32))
    return path


@pytest.fixture(scope="module")
def npy_run(grey_images, tmp_path_factory) -> Path:
    """``pyrogen fit vae --data images.npy`` with a conv encoder; needs no shared data."""
    out = tmp_path_factory.mktemp("vae") / "npy"
    argv = ["fit", "vae", "--data", str(grey_images), "--encoder", "conv", "--binarize"]
    argv += ["threshold", "--epochs", "2", "--batch-size", "32", "--iw-samples", "5"]
    argv += ["--latent-dim", "3", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    return out


def _summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def test_fit_auto_picks_two_components_on_old_faithful(auto_run):
    summary = _summary(auto_run)
    assert summary["n_components"] == 2
    assert summary["selection"]["criterion"] == "bic"
    scores = {int(k): v for k, v in summary["selection"]["scores"].items()}
    assert sorted(scores) == list(range(1, 9))
    assert min(scores, key=scores.get) == 2
    assert summary["bic"] == pytest.approx(scores[2], rel=1e-6)  # the refit is the selected fit
    assert summary["columns"] == ["eruptions", "waiting"] and summary["n_rows"] == 272
    assert summary["data"] == "Old Faithful (bundled)" and summary["inference"] == "map"
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
    assert main(argv) == 0
    printed = capsys.readouterr().out
    summary = _summary(out)
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
    summary = _summary(out)
    assert summary["inference"] == "nuts"
    assert summary["mcmc"]["num_chains"] == 2 and summary["mcmc"]["num_samples"] == 5
    idata = arviz.from_netcdf(out / "inference_data.nc")
    assert idata.posterior["locs"].shape == (2, 5, 2, 2)
    assert idata.sample_stats["diverging"].shape == (2, 5)
    assert idata.log_likelihood["obs"].shape == (2, 5, 272)


def test_fit_default_run_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["fit", "gmm", "--components", "2", "--quiet", *QUICK]) == 0
    printed = capsys.readouterr().out.strip()
    assert re.fullmatch(r"runs/gmm-\d{8}-\d{6}", printed)
    assert (tmp_path / printed / "model.pt").is_file()


def test_sample(auto_run, tmp_path, capsys):
    assert main(["sample", str(auto_run), "-n", "7", "--seed", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "eruptions,waiting" and len(lines) == 8
    csv = tmp_path / "samples.csv"
    assert main(["sample", str(auto_run), "-n", "7", "--seed", "3", "--out", str(csv)]) == 0
    assert csv.read_text().strip().splitlines() == lines  # same seed, same rows
    rows = pyrogen.data.load(csv, columns="eruptions,waiting")
    assert rows.shape == (7, 2)
    npy = tmp_path / "samples.npy"
    assert main(["sample", str(auto_run / "model.pt"), "-n", "5", "--out", str(npy)]) == 0
    assert np.load(npy).shape == (5, 2)


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
            ["fit", "gmm", "--components", "300", *QUICK],
            r"pyrogen: error: n_components: expected at most n_samples=272 components, got 300",
        ),
        (["fit", "gmm", "--out", "{tmp}"], r"pyrogen: error: out_dir: .* never overwritten"),
        (["fit", "banana"], r"pyrogen fit: error: argument FAMILY: invalid choice: 'banana'"),
        (
            ["sample", "{tmp}/missing.pt", "-n", "3"],
            r"pyrogen: error: checkpoint .* does not exist",
        ),
        (
            ["sample", "{tmp}", "-n", "3"],
            r"pyrogen: error: .*expected a run folder holding model.pt",
        ),
        (
            ["sample", "{run}", "-n", "3", "--out", "x.txt"],
            r"--out: expected a file ending in .csv",
        ),
        (
            ["evaluate", "{run}", "--data", "{wide}"],
            r"pyrogen: error: x: expected 2 columns, got 3",
        ),
        ([], r"pyrogen: error: the following arguments are required: COMMAND"),
    ],
)
def test_bad_input_exits_2_with_a_message(argv, message, tmp_path, capsys, auto_run, faithful_csv):
    (tmp_path / "occupied.txt").write_text("an earlier run")
    wide = tmp_path / "wide.csv"
    np.savetxt(wide, np.ones((4, 3)), delimiter=",", header="a,b,c", comments="")
    fill = {
        "{tmp}": str(tmp_path),
        "{csv}": str(faithful_csv),
        "{run}": str(auto_run),
        "{wide}": str(wide),
    }
    for key, value in fill.items():
        argv = [arg.replace(key, value) for arg in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert "Traceback" not in err


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
    summary = _summary(out)
    assert summary["training"]["device"].startswith("cuda") and summary["n_components"] == 2
    assert main(["sample", str(out), "-n", "3"]) == 0


def test_training_that_fails_numerically_exits_1(tmp_path, monkeypatch, capsys):
    def diverging_fit(*args, **kwargs):
        raise FloatingPointError("step 3: the loss is NaN/inf")

    monkeypatch.setattr(cli_gmm, "fit", diverging_fit)
    out = tmp_path / "run"
    assert main(["fit", "gmm", "--components", "2", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "pyrogen: error: training failed: step 3: the loss is NaN/inf" in err
    assert not out.exists()


# --- the VAE ----------------------------------------------------------------------------
def test_fit_vae_on_mnist_writes_the_report(mnist_run):
    run, printed = mnist_run
    assert {p.name for p in run.iterdir()} == VAE_FILES
    for name in VAE_FILES - {"summary.json", "model.pt"}:
        assert (run / name).read_bytes().startswith(PNG_MAGIC), name
    summary = _summary(run)
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
    training = _summary(out)["training"]
    assert training["processes"] == 2 and training["steps"] == math.ceil(500 / 128)
    assert math.isfinite(_summary(out)["test"]["elbo_per_example"])
    assert "in 2 data-parallel processes" in capfd.readouterr().out  # the first process's
    assert pyrogen.load(out / "model.pt").config["latent_dim"] == 2


def test_evaluate_vae_reproduces_the_run(mnist_run, shared_data, capsys):
    run, _ = mnist_run
    assert main(["evaluate", str(run), "--data-dir", str(shared_data / "mnist")]) == 0
    printed = capsys.readouterr().out
    test = _summary(run)["test"]  # same seed, K and binarized test set as the run
    assert f"ELBO            {test['elbo_per_example']:.4f} nats per example" in printed
    assert (
        f"log p(x)        {test['log_likelihood_per_example']:.4f} nats per example "
        "(IWAE bound, K = 5)" in printed
    )
    assert f"bits/dim        {test['bits_per_dim']:.4f}" in printed
    assert "test split (10000 rows)" in printed and "--binarize dynamic" in printed


def test_sample_vae_writes_npy_and_png(mnist_run, tmp_path):
    run, _ = mnist_run
    npy = tmp_path / "samples.npy"
    assert main(["sample", str(run), "-n", "6", "--out", str(npy), "--seed", "1"]) == 0
    rows = np.load(npy)
    assert rows.shape == (6, 784) and set(np.unique(rows)) <= {0.0, 1.0}  # Bernoulli draws
    again = tmp_path / "again.npy"
    assert main(["sample", str(run), "-n", "6", "--out", str(again), "--seed", "1"]) == 0
    np.testing.assert_array_equal(np.load(again), rows)
    means = tmp_path / "means.npy"
    assert main(["sample", str(run), "-n", "6", "--mean", "--out", str(means)]) == 0
    assert ((np.load(means) > 0) & (np.load(means) < 1)).all()
    png = tmp_path / "samples.png"
    assert main(["sample", str(run), "-n", "64", "--mean", "--out", str(png)]) == 0
    assert png.read_bytes().startswith(PNG_MAGIC)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "again.npy",
        "means.npy",
        "samples.npy",
        "samples.png",
    ]  # no temporary files left


def test_fit_vae_on_an_npy_array(npy_run, grey_images, tmp_path, capsys):
    assert {p.name for p in npy_run.iterdir()} == VAE_FILES
    summary = _summary(npy_run)
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


def test_dynamic_binarization_resamples_every_epoch_and_resumes_exactly(monkeypatch):
    """Each epoch trains on a fresh sample; with data that sampling cannot change (0s and
    1s), the epoch-by-epoch fit equals one uninterrupted fit, step for step."""
    seen = []

    def recording_fit(model, data, **kwargs):
        seen.append(data.clone())
        return pyrogen.fit(model, data, **kwargs)

    monkeypatch.setattr(cli_vae, "fit", recording_fit)
    grey = torch.full((40, 16), 0.5)
    model = pyrogen.VAE((16,), latent_dim=2, hidden=(8,))
    result = cli_vae._fit_resampling_each_epoch(
        model, grey, 8, 4, quiet=True, binarize_seed=1, batch_size=10, seed=0
    )
    assert result.steps == 8 and len(result.losses) == 8 and len(seen) == 2
    assert all(set(x.unique().tolist()) == {0.0, 1.0} for x in seen)
    assert not torch.equal(seen[0], seen[1])

    binary = (torch.rand(40, 16, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    models = []
    for _ in range(2):
        torch.manual_seed(3)  # the same initial weights
        models.append(pyrogen.VAE((16,), latent_dim=2, hidden=(8,)))
    whole = pyrogen.fit(models[0], binary, steps=10, batch_size=16, seed=2, progress=False)
    epochs = cli_vae._fit_resampling_each_epoch(
        models[1], binary, 10, 3, quiet=True, binarize_seed=1, batch_size=16, seed=2
    )
    assert epochs.losses == whole.losses
    for (name, a), (_, b) in zip(
        models[0].state_dict().items(), models[1].state_dict().items(), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


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
        (["evaluate", "{vae}"], r"pyrogen: error: --data-dir, --data: expected one of them"),
        (
            ["fit", "vae", "--data", "{images}", "--dataset", "binarized-mnist"],
            r"pyrogen: error: --dataset: expected --data-dir with it",
        ),
        (
            ["evaluate", "{vae}", "--data", "{table}"],
            r"pyrogen: error: .*table.npy: expected examples of shape \(1, 8, 8\)",
        ),
        (
            ["sample", "{vae}", "-n", "3"],
            r"pyrogen: error: --out: expected a file ending in .npy or .png for an image model",
        ),
        (
            ["sample", "{vae}", "-n", "3", "--out", "{tmp}/x.csv"],
            r"pyrogen: error: --out: expected a file ending in .npy or .png .*x.csv",
        ),
        (
            ["sample", "{gmm}", "-n", "3", "--out", "{tmp}/x.png"],
            r"pyrogen: error: --out: expected a file ending in .csv or .npy for a tabular model",
        ),
        (
            ["sample", "{gmm}", "-n", "3", "--mean"],
            r"pyrogen: error: --mean: expected a model with a decoder",
        ),
        (["evaluate", "{gmm}"], r"pyrogen: error: --data: expected a data file"),
        (
            ["evaluate", "{gmm}", "--data", "{csv}", "--iw-samples", "5"],
            r"pyrogen: error: --iw-samples: expected no value for a gmm model",
        ),
    ],
)
def test_vae_bad_input_exits_2_with_a_message(
    argv, message, tmp_path, capsys, npy_run, auto_run, faithful_csv
):
    fill = {"{tmp}": str(tmp_path), "{vae}": str(npy_run), "{gmm}": str(auto_run)}
    fill["{csv}"] = str(faithful_csv)
    for name, array in {
        "bytes": np.linspace(0, 255, 4 * 8 * 8, dtype=np.float32).reshape(4, 8, 8),
        "table": np.full((10, 5), 0.5, dtype=np.float32),
        "images": np.full((10, 8, 8), 0.5, dtype=np.float32),
    }.items():
        fill[f"{{{name}}}"] = str(tmp_path / f"{name}.npy")
        np.save(tmp_path / f"{name}.npy", array)
    argv = [fill.get(arg, arg) if arg in fill else _fill(arg, fill) for arg in argv]
    before = set(tmp_path.iterdir())
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert "Traceback" not in err
    assert set(tmp_path.iterdir()) == before  # nothing written


def _fill(arg: str, fill: dict[str, str]) -> str:
    for key, value in fill.items():
        arg = arg.replace(key, value)
    return arg


@pytest.mark.cuda
def test_fit_vae_on_cuda(grey_images, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["fit", "vae", "--data", str(grey_images), "--device", "cuda", "--binarize", "dynamic"]
    argv += ["--epochs", "2", "--batch-size", "32", "--iw-samples", "5", "--out", str(out)]
    assert main([*argv, "--quiet"]) == 0
    summary = _summary(out)
    assert summary["training"]["device"].startswith("cuda") and summary["training"]["steps"] == 8
    assert {p.name for p in out.iterdir()} == VAE_FILES
    capsys.readouterr()
    assert main(["evaluate", str(out), "--data", str(grey_images), "--device", "cuda"]) == 0
    assert "IWAE bound, K = 5" in capsys.readouterr().out


# --- the VAE variants: cvae, ssvae, gmvae -----------------------------------------------
VARIANT_QUICK = ["--epochs", "2", "--batch-size", "32", "--iw-samples", "3", "--latent-dim", "2"]
VARIANT_QUICK += ["--binarize", "dynamic"]
# Runs of the variants that several tests use: (run folder, what it printed), made once.
_VARIANT_RUNS: dict[str, tuple[Path, str]] = {}


def _class_images(rows: int = 90, classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """8 x 8 grey images in [0, 1], each class a bright vertical band of its own, and their
    labels (row i has class i % classes)."""
    rng = np.random.default_rng(0)
    labels = np.arange(rows) % classes
    images = 0.2 * rng.random((rows, 8, 8), dtype=np.float32)
    for k in range(classes):
        images[labels == k, :, 2 * k : 2 * k + 3] += 0.7
    return images, labels


@pytest.fixture(scope="module")
def labelled_npz(tmp_path_factory) -> Path:
    """90 images with their labels in one NPZ archive, arrays x and y."""
    path = tmp_path_factory.mktemp("npz") / "classes.npz"
    images, labels = _class_images()
    np.savez(path, x=images, y=labels)
    return path


@pytest.fixture
def variant_run(labelled_npz, tmp_path_factory, capsys):
    """Factory: ``pyrogen fit FAMILY --data classes.npz`` with quick settings, run once per
    name and argument list."""

    def make(name: str, *argv: str) -> tuple[Path, str]:
        if name not in _VARIANT_RUNS:
            out = tmp_path_factory.mktemp("variants") / name
            command = ["fit", *argv, "--data", str(labelled_npz), "--out", str(out)]
            capsys.readouterr()
            assert main([*command, *VARIANT_QUICK]) == 0
            _VARIANT_RUNS[name] = (out, capsys.readouterr().out)
        return _VARIANT_RUNS[name]

    return make


def _cvae_completion_run(variant_run) -> tuple[Path, str]:
    return variant_run("cvae-top", "cvae", "--observed", "top")


def test_fit_cvae_conditions_on_the_labels_of_an_npz(variant_run, labelled_npz, tmp_path, capsys):
    run, printed = variant_run("cvae", "cvae")
    files = {"samples.png", "class_samples.png", "reconstructions.png", "latent.png"}
    assert {p.name for p in run.iterdir()} == files | {"elbo.png", "summary.json", "model.pt"}
    assert (run / "class_samples.png").read_bytes().startswith(PNG_MAGIC)
    summary = _summary(run)
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
    run, printed = _cvae_completion_run(variant_run)
    files = {"class_samples.png", "completions.png", "latent.png", "elbo.png"}
    assert {p.name for p in run.iterdir()} == files | {"summary.json", "model.pt"}
    summary = _summary(run)
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
    images, _ = _class_images()
    binary = torch.bernoulli(torch.from_numpy(images), generator=torch.Generator().manual_seed(0))
    np.testing.assert_array_equal(completed[:, :4], binary[:5, :4].numpy())


def test_fit_ssvae_keeps_a_balanced_few_labels_and_reports_accuracy(
    variant_run, labelled_npz, capsys
):
    run, printed = variant_run("ssvae", "ssvae", "--labelled", "7")
    files = {"samples.png", "class_samples.png", "reconstructions.png", "latent.png"}
    assert {p.name for p in run.iterdir()} == files | {"elbo.png", "summary.json", "model.pt"}
    summary = _summary(run)
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


def test_keep_balanced_labels():
    labels = torch.tensor([0] * 10 + [1] * 10 + [2] * 2)
    kept, counts = cli_labels._keep_balanced(labels, 12, 3, seed=0)
    assert counts == [5, 5, 2]  # class 2 has only 2 rows: the others share the rest
    assert int((kept >= 0).sum()) == 12 and bool((kept[kept >= 0] == labels[kept >= 0]).all())
    _, counts = cli_labels._keep_balanced(labels, 4, 3, seed=1)
    assert sorted(counts) == [1, 1, 2]
    smaller, _ = cli_labels._keep_balanced(labels, 3, 3, seed=0)
    assert bool((kept[smaller >= 0] >= 0).all())  # with one seed, the sets are nested


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
    summary = _summary(run)
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
        (
            ["sample", "{cvae_top}", "-n", "3", "--out", "{tmp}/x.npy"],
            r"pyrogen: error: --data, --data-dir: a cvae given the top half of each image "
            r"generates only the rest, so it needs examples to complete",
        ),
        (
            ["sample", "{cvae_top}", "-n", "3", "--label", "3", "--out", "{tmp}/x.npy"],
            r"pyrogen: error: --label: expected a class in 0..2, got 3",
        ),
        (
            ["sample", "{cvae_top}", "-n", "500", "--data", "{npz}", "--out", "{tmp}/x.npy"],
            r"pyrogen: error: -n: expected at most 90, the examples to complete",
        ),
        (
            ["sample", "{vae}", "-n", "3", "--label", "1", "--out", "{tmp}/x.npy"],
            r"pyrogen: error: --label: expected a model with classes or components .* got vae",
        ),
        (
            ["sample", "{vae}", "-n", "3", "--data", "{npz}", "--out", "{tmp}/x.npy"],
            r"pyrogen: error: --data: expected no examples for a vae model",
        ),
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
def test_variants_bad_input_exits_2_with_a_message(
    argv, message, tmp_path, capsys, variant_run, labelled_npz, npy_run
):
    images, labels = _class_images()
    fill = {"{tmp}": str(tmp_path), "{npz}": str(labelled_npz), "{vae}": str(npy_run)}
    fill["{cvae_top}"] = str(_cvae_completion_run(variant_run)[0])
    for name, array in {
        "images": images,
        "short": labels[:10],
        "negative": np.where(np.arange(90) == 4, -1, labels),
        "halves": labels + 0.5,
    }.items():
        fill[f"{{{name}}}"] = str(tmp_path / f"{name}.npy")
        np.save(tmp_path / f"{name}.npy", array)
    argv = [_fill(arg, fill) for arg in argv]
    before = set(tmp_path.iterdir())
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert err.count("error:") == 1 and "Traceback" not in err
    assert set(tmp_path.iterdir()) == before  # nothing written


def test_fit_flow_on_a_csv_then_evaluate_and_sample(tmp_path, faithful_csv, capsys):
    out = tmp_path / "flow"
    argv = ["fit", "flow", "--data", str(faithful_csv), "--out", str(out), "--quiet"]
    assert main([*argv, "--steps", "60", "--transforms", "2", "--hidden", "16"]) == 0
    summary = _summary(out)
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
    training = _summary(out)["training"]
    held_out = training["validation_losses"]
    # full batch: one held-out score per step; stopped 5 steps after the best one
    assert training["stopped_early"] and training["steps"] < 3000
    assert [step for step, _ in held_out] == list(range(1, training["steps"] + 1))
    assert training["best_loss"] == min(loss for _, loss in held_out)
    assert training["steps"] - training["best_step"] == 5


@pytest.mark.parametrize(
    "options, message",
    [
        (["--validation-share", "1.5"], "expected a fraction between 0 and 1"),
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


# --- pyrogen fit diffusion -----------------------------------------------------------------
DIFFUSION_QUICK = ["--timesteps", "20", "--steps", "6", "--batch-size", "16", "--quiet"]


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
    summary = _summary(out)
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
    summary = _summary(out)
    assert summary["config"]["likelihood"] == "gaussian"
    assert summary["config"]["denoiser"] == "mlp"
    capsys.readouterr()
    assert main(["sample", str(out), "-n", "3", "--steps", "4"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "eruptions,waiting" and len(lines) == 4


def test_fit_latent_diffusion_on_a_vae_run(npy_run, grey_images, tmp_path, capsys):
    out = tmp_path / "latent"
    argv = ["fit", "diffusion", "--data", str(grey_images), "--autoencoder", str(npy_run)]
    argv += ["--binarize", "threshold", "--hidden", "16", "--out", str(out), *DIFFUSION_QUICK]
    assert main(argv) == 0
    summary = _summary(out)
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


def test_sample_refuses_reverse_process_options_for_other_models(npy_run, tmp_path, capsys):
    argv = ["sample", str(npy_run), "-n", "2", "--out", str(tmp_path / "x.npy")]
    assert main([*argv, "--steps", "5"]) == 2
    assert "--steps: expected a diffusion model, got vae" in capsys.readouterr().err


# --- pyrogen sample / evaluate --devices N ---------------------------------------------------
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
