"""The ``pyrogen`` command line: fit / sample / evaluate, and clean errors for bad input."""

from __future__ import annotations

import json
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
from pyrogen import cli  # noqa: E402
from pyrogen.cli import main  # noqa: E402
from pyrogen.data.datasets import old_faithful  # noqa: E402

# Small settings that keep every command fast; they are not what a real run would use.
QUICK = ["--steps", "30", "--num-samples", "20"]


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
    assert "gmm" in capsys.readouterr().out


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

    monkeypatch.setattr(cli, "fit", diverging_fit)
    out = tmp_path / "run"
    assert main(["fit", "gmm", "--components", "2", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "pyrogen: error: training failed: step 3: the loss is NaN/inf" in err
    assert not out.exists()
