"""``pyrogen evaluate RUN --ood-data PATH``: the out-of-distribution metrics of a run's model
(those of pyrogen.ood on the same rows), and clean errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import pyrogen
from pyrogen import ood
from pyrogen.cli import main
from pyrogen.data.datasets import old_faithful
from tests.cli.helpers import exits_2_with


@pytest.fixture
def far_csv(tmp_path):
    """Old Faithful's rows moved far from the data: plainly out-of-distribution."""
    path = tmp_path / "far.csv"
    rows = old_faithful().numpy() * np.array([3.0, 0.5])
    np.savetxt(path, rows, delimiter=",", header="eruptions,waiting", comments="")
    return path


def test_evaluate_prints_the_ood_metrics_of_pyrogen_ood(auto_run, faithful_csv, far_csv, capsys):
    argv = ["evaluate", str(auto_run), "--data", str(faithful_csv), "--ood-data", str(far_csv)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    model = pyrogen.load(auto_run / "model.pt")
    inside = old_faithful()
    outside = torch.as_tensor(np.loadtxt(far_csv, delimiter=",", skiprows=1))
    report = ood.ood_report(model, inside, outside, scores=("nll", "typicality"))
    assert f"out-of-distribution: {far_csv}: 272 rows x 2 columns" in printed
    assert ood.format_report(report) in printed
    assert report["nll"]["auroc"] > 0.99
    assert "log-likelihood" in printed  # the in-distribution numbers come first, as before


def test_evaluate_ood_of_an_image_run(npy_run, grey_images, tmp_path, capsys):
    blank = tmp_path / "blank.npy"
    np.save(blank, np.zeros((20, 8, 8), dtype=np.float32))
    argv = ["evaluate", str(npy_run), "--data", str(grey_images), "--ood-data", str(blank)]
    assert main([*argv, "--ood-score", "nll,complexity", "--iw-samples", "2"]) == 0
    printed = capsys.readouterr().out
    assert f"out-of-distribution: {blank}: 20 rows of shape (1, 8, 8)" in printed
    assert "\nnll " in printed and "\ncomplexity " in printed and "typicality" not in printed


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--ood-data", "{narrow}"], r"--ood-data: expected rows of shape \(2,\), as the rows"),
        (["--ood-data", "{far}", "--ood-score", "nll,entropy"], r"--ood-score: expected one of"),
        (["--ood-score", "nll"], r"--ood-score: expected --ood-data with it"),
    ],
)
def test_bad_ood_input_exits_2_with_a_message(
    extra, message, auto_run, faithful_csv, far_csv, tmp_path, capsys
):
    narrow = tmp_path / "narrow.csv"
    np.savetxt(narrow, np.ones((5, 3)), delimiter=",", header="a,b,c", comments="")
    fill = {"{narrow}": str(narrow), "{far}": str(far_csv)}
    argv = ["evaluate", str(auto_run), "--data", str(faithful_csv)]
    argv += [fill.get(arg, arg) for arg in extra]
    exits_2_with(argv, message, tmp_path, capsys)


def test_a_model_without_a_likelihood_is_refused(tmp_path, faithful_csv, capsys):
    path = tmp_path / "gan.pt"
    pyrogen.GAN((2,), latent_dim=2, hidden=(4,)).save(path)
    argv = ["evaluate", str(path), "--data", str(faithful_csv), "--ood-data", str(faithful_csv)]
    exits_2_with(
        argv, r"--ood-data: model: expected a family with a likelihood of x", tmp_path, capsys
    )
