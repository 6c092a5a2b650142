"""``pyrogen fit naive_bayes`` and ``pyrogen fit logistic_regression`` on a table with a
label column, through the command built from the registry."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.datasets import load_iris

from pyrogen.cli import main


@pytest.fixture(scope="module")
def iris_csv(tmp_path_factory):
    x, y = load_iris(return_X_y=True)
    path = tmp_path_factory.mktemp("iris") / "iris.csv"
    header = "sepal_length,sepal_width,petal_length,petal_width,species"
    np.savetxt(path, np.column_stack([x, y]), delimiter=",", header=header, comments="")
    return path


@pytest.mark.parametrize(
    "family, scored", [("naive_bayes", "log p(x)"), ("logistic_regression", "log p(y | x)")]
)
def test_fit_and_evaluate_a_classifier_on_a_label_column(
    family, scored, iris_csv, tmp_path, capsys
):
    out = tmp_path / "run"
    argv = ["fit", family, "--data", str(iris_csv), "--labels", "species", "--out", str(out)]
    assert main([*argv, "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["num_classes"] == 3  # from the labels
    assert summary["n_features"] == 4  # the label column is not a feature
    # scored on the 15 rows --test-share holds out by default
    counts = np.array(summary["classification"]["confusion_matrix"])
    held_out = summary["test"]["n_rows"]
    assert held_out == 15 and summary["n_rows"] == 135 and summary["classification"]["held_out"]
    assert counts.shape == (3, 3) and counts.sum() == held_out
    assert summary["classification"]["accuracy"] == pytest.approx(np.trace(counts) / held_out)
    assert summary["test"]["accuracy"] == pytest.approx(np.trace(counts) / held_out)
    capsys.readouterr()
    assert main(["evaluate", str(out), "--data", str(iris_csv), "--labels", "species"]) == 0
    printed = capsys.readouterr().out
    assert scored in printed
    accuracy = float(printed.split("accuracy")[1].split()[0])
    assert accuracy > 0.9
    log_loss = float(printed.split("log-loss")[1].split()[0])
    assert 0 < log_loss < 0.5  # a good classifier's, well under log 3 (a uniform guess)
    assert ("log p(x)" in printed) == (family == "naive_bayes")  # only where p(x) exists


@pytest.mark.parametrize("test_share", ["0", "0.1"])
def test_the_fit_prints_the_confusion_matrix(test_share, iris_csv, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["fit", "naive_bayes", "--data", str(iris_csv), "--labels", "species"]
    assert main([*argv, "--test-share", test_share, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    if test_share == "0":  # every row fitted: the confusion matrix of those rows
        assert "confusion       rows: true class, columns: predicted" in printed
        assert "accuracy" in printed and "labelled rows it was fitted on" in printed
    else:
        assert "test confusion  rows: true class, columns: predicted" in printed
        assert "test accuracy" in printed and "fitted on" not in printed


def test_semi_supervised_naive_bayes_from_the_command_line(iris_csv, tmp_path):
    x, y = load_iris(return_X_y=True)
    y = np.where(np.arange(150) % 5 == 0, y, -1)  # one row in five labelled
    path = tmp_path / "partly.csv"
    np.savetxt(path, np.column_stack([x, y]), delimiter=",", header="a,b,c,d,y", comments="")
    out = tmp_path / "run"
    argv = ["fit", "naive_bayes", "--data", str(path), "--labels", "y", "--out", str(out)]
    assert main([*argv, "--quiet"]) == 0
    assert json.loads((out / "summary.json").read_text())["config"]["num_classes"] == 3


def test_logistic_regression_without_labels_is_a_clear_error(iris_csv, tmp_path, capsys):
    argv = ["fit", "logistic_regression", "--data", str(iris_csv), "--out", str(tmp_path / "r")]
    assert main(argv) == 2
    assert "y: expected the labels" in capsys.readouterr().err


def test_sampling_a_discriminative_model_is_a_clear_error(iris_csv, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["fit", "logistic_regression", "--data", str(iris_csv), "--labels", "species"]
    assert main([*argv, "--out", str(out), "--quiet"]) == 0
    assert main(["sample", str(out), "-n", "3", "--out", str(tmp_path / "draws.npy")]) == 2
    assert "draws no rows" in capsys.readouterr().err
    assert not (tmp_path / "draws.npy").exists()
