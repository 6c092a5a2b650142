"""``pyrogen sample``: rows, images and completions drawn from a fitted model, and clean
errors for bad input."""

from __future__ import annotations

import numpy as np
import pytest

import pyrogen
from pyrogen.cli import main
from tests.cli.helpers import (
    PNG_MAGIC,
    exits_2_with,
    fill_in,
)


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


@pytest.mark.parametrize(
    ("argv", "message"),
    [
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
    ],
)
def test_bad_input_exits_2_with_a_message(argv, message, tmp_path, capsys, table_inputs):
    argv = [fill_in(arg, table_inputs) for arg in argv]
    exits_2_with(argv, message, tmp_path, capsys)


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


@pytest.mark.parametrize(
    ("argv", "message"),
    [
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
    ],
)
def test_vae_bad_input_exits_2_with_a_message(argv, message, tmp_path, capsys, vae_inputs):
    argv = [fill_in(arg, vae_inputs) for arg in argv]
    exits_2_with(argv, message, tmp_path, capsys)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
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
            ["sample", "{cvae_top}", "-n", "2", "--data", "{npz}", "--key", "images",
             "--out", "{tmp}/x.npy"],
            r"pyrogen: error: .*classes.npz: unknown key: expected one of 'x', 'y', got 'images'",
        ),
        (
            ["sample", "{vae}", "-n", "3", "--label", "1", "--out", "{tmp}/x.npy"],
            r"pyrogen: error: --label: expected a model with classes or components .* got vae",
        ),
        (
            ["sample", "{vae}", "-n", "3", "--data", "{npz}", "--out", "{tmp}/x.npy"],
            r"pyrogen: error: --data: expected no examples for a vae model",
        ),
    ],
)
def test_variants_bad_input_exits_2_with_a_message(argv, message, tmp_path, capsys, variant_inputs):
    argv = [fill_in(arg, variant_inputs) for arg in argv]
    exits_2_with(argv, message, tmp_path, capsys, once=True)


def test_sample_refuses_reverse_process_options_for_other_models(npy_run, tmp_path, capsys):
    argv = ["sample", str(npy_run), "-n", "2", "--out", str(tmp_path / "x.npy")]
    assert main([*argv, "--steps", "5"]) == 2
    assert "--steps: expected a diffusion model, got vae" in capsys.readouterr().err
