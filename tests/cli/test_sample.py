"""``pyrogen sample``: rows, images and completions drawn from a fitted model, and clean
errors for bad input."""

from __future__ import annotations

import re

import numpy as np
import pytest

import pyrogen
from pyrogen.cli import main
from tests.cli.helpers import (
    PNG_MAGIC,
    class_images,
    cvae_completion_run,
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
    argv = [fill.get(arg, arg) if arg in fill else fill_in(arg, fill) for arg in argv]
    before = set(tmp_path.iterdir())
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert "Traceback" not in err
    assert set(tmp_path.iterdir()) == before  # nothing written


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
            ["sample", "{vae}", "-n", "3", "--label", "1", "--out", "{tmp}/x.npy"],
            r"pyrogen: error: --label: expected a model with classes or components .* got vae",
        ),
        (
            ["sample", "{vae}", "-n", "3", "--data", "{npz}", "--out", "{tmp}/x.npy"],
            r"pyrogen: error: --data: expected no examples for a vae model",
        ),
    ],
)
def test_variants_bad_input_exits_2_with_a_message(
    argv, message, tmp_path, capsys, variant_run, labelled_npz, npy_run
):
    images, labels = class_images()
    fill = {"{tmp}": str(tmp_path), "{npz}": str(labelled_npz), "{vae}": str(npy_run)}
    fill["{cvae_top}"] = str(cvae_completion_run(variant_run)[0])
    for name, array in {
        "images": images,
        "short": labels[:10],
        "negative": np.where(np.arange(90) == 4, -1, labels),
        "halves": labels + 0.5,
    }.items():
        fill[f"{{{name}}}"] = str(tmp_path / f"{name}.npy")
        np.save(tmp_path / f"{name}.npy", array)
    argv = [fill_in(arg, fill) for arg in argv]
    before = set(tmp_path.iterdir())
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert err.count("error:") == 1 and "Traceback" not in err
    assert set(tmp_path.iterdir()) == before  # nothing written


def test_sample_refuses_reverse_process_options_for_other_models(npy_run, tmp_path, capsys):
    argv = ["sample", str(npy_run), "-n", "2", "--out", str(tmp_path / "x.npy")]
    assert main([*argv, "--steps", "5"]) == 2
    assert "--steps: expected a diffusion model, got vae" in capsys.readouterr().err
