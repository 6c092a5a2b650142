"""``pyrogen fit noise_classifier --diffusion RUN`` and ``pyrogen sample RUN --classifier``."""

from __future__ import annotations

import numpy as np
import torch

import pyrogen
from pyrogen.cli import main
from tests.cli.helpers import DIFFUSION_QUICK, PNG_MAGIC, summary

QUICK = ["--steps", "6", "--batch-size", "16", "--quiet"]


def test_fit_a_classifier_of_a_diffusion_run_then_guide_its_samples(labelled_npz, tmp_path, capsys):
    diffusion = tmp_path / "diffusion"
    argv = ["fit", "diffusion", "--data", str(labelled_npz), "--likelihood", "discretized"]
    assert main([*argv, "--channels", "8", "--out", str(diffusion), *DIFFUSION_QUICK]) == 0
    classifier = tmp_path / "classifier"
    argv = ["fit", "noise_classifier", "--diffusion", str(diffusion), "--data", str(labelled_npz)]
    assert main([*argv, "--channels", "4", "--hidden", "8", "--out", str(classifier), *QUICK]) == 0
    run = summary(classifier)
    assert run["config"]["timesteps"] == 20 and run["config"]["num_classes"] == 3
    assert run["config"]["likelihood"] == "discretized" and run["diffusion"] == str(diffusion)
    assert run["test"]["quantity"] == "log p(y | z_0)"
    model = pyrogen.load(classifier / "model.pt")
    model.check_matches(pyrogen.load(diffusion / "model.pt"))  # the same levels and shape
    grid = tmp_path / "grid.png"
    argv = ["sample", str(diffusion), "-n", "6", "--steps", "5", "--out", str(grid)]
    assert main([*argv, "--classifier", str(classifier), "--classifier-scale", "3"]) == 0
    assert grid.read_bytes().startswith(PNG_MAGIC)
    draws = tmp_path / "draws.npy"
    argv = ["sample", str(diffusion), "-n", "4", "--out", str(draws), "--label", "2"]
    assert main([*argv, "--classifier", str(classifier)]) == 0
    assert np.load(draws).shape == (4, 8, 8)
    capsys.readouterr()
    # a classifier of other levels, and a scale without a classifier, are refused
    other = tmp_path / "other.pt"
    pyrogen.NoiseConditionalClassifier((8, 8), 3, 20, "cosine", "discretized").save(other)
    assert main([*argv, "--classifier", str(other)]) == 2
    assert "noise levels" in capsys.readouterr().err
    assert main([*argv, "--classifier-scale", "2"]) == 2
    assert "--classifier-scale: expected a classifier" in capsys.readouterr().err
    assert main([*argv, "--classifier", str(diffusion)]) == 2
    assert "--classifier: expected a run or model file of a noise_classifier model" in (
        capsys.readouterr().err
    )


def test_fit_a_classifier_needs_a_diffusion_run_and_labels(grey_images, auto_run, tmp_path, capsys):
    out = tmp_path / "c"
    argv = ["fit", "noise_classifier", "--data", str(grey_images), "--out", str(out), *QUICK]
    assert main([*argv, "--diffusion", str(auto_run)]) == 2
    assert "--diffusion: expected a run or model file of a diffusion model, got a gmm" in (
        capsys.readouterr().err
    )
    diffusion = tmp_path / "d.pt"
    torch.manual_seed(0)
    pyrogen.DiffusionVAE((8, 8), timesteps=5, channels=8, likelihood="discretized").save(diffusion)
    assert main([*argv, "--diffusion", str(diffusion)]) == 2
    assert "--labels: expected labels for the noise classifier" in capsys.readouterr().err
    assert not out.exists()
