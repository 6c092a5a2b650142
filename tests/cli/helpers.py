"""Settings and helpers the command-line tests share (their fixtures are in conftest.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from pyrogen.cli import main

# Small settings that keep every command fast; they are not what a real run would use.
QUICK = ["--steps", "30", "--num-samples", "20"]
VAE_QUICK = ["--limit", "500", "--epochs", "1", "--iw-samples", "5", "--latent-dim", "2"]
VARIANT_QUICK = ["--epochs", "2", "--batch-size", "32", "--iw-samples", "3", "--latent-dim", "2"]
VARIANT_QUICK += ["--binarize", "dynamic"]
DIFFUSION_QUICK = ["--timesteps", "20", "--steps", "6", "--batch-size", "16", "--quiet"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
VAE_FILES = {
    "elbo.png",
    "samples.png",
    "reconstructions.png",
    "latent.png",
    "summary.json",
    "model.pt",
}


def summary(run: Path) -> dict:
    """A run folder's summary.json."""
    return json.loads((run / "summary.json").read_text())


def fill_in(arg: str, fill: dict[str, str]) -> str:
    """``arg`` with each placeholder of ``fill`` replaced."""
    for key, value in fill.items():
        arg = arg.replace(key, value)
    return arg


def class_images(rows: int = 90, classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """8 x 8 grey images in [0, 1], each class a bright vertical band of its own, and their
    labels (row i has class i % classes)."""
    rng = np.random.default_rng(0)
    labels = np.arange(rows) % classes
    images = 0.2 * rng.random((rows, 8, 8), dtype=np.float32)
    for k in range(classes):
        images[labels == k, :, 2 * k : 2 * k + 3] += 0.7
    return images, labels


def cvae_completion_run(variant_run) -> tuple[Path, str]:
    """The conditional VAE given the top half of each image (see ``variant_run``)."""
    return variant_run("cvae-top", "cvae", "--observed", "top")


def write_arrays(tmp_path: Path, fill: dict[str, str], arrays: dict[str, np.ndarray]) -> None:
    """Save each array as ``tmp_path / NAME.npy`` and add ``{NAME}`` to ``fill``."""
    for name, array in arrays.items():
        fill[f"{{{name}}}"] = str(tmp_path / f"{name}.npy")
        np.save(tmp_path / f"{name}.npy", array)


def exits_2_with(argv: list[str], message: str, tmp_path: Path, capsys, *, once=False) -> None:
    """``main(argv)`` exits 2 with ``message`` (a regex) on stderr, no traceback, and
    writes nothing into ``tmp_path``; with ``once``, the message has one ``error:``."""
    before = set(tmp_path.iterdir())
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert "Traceback" not in err
    if once:
        assert err.count("error:") == 1
    assert set(tmp_path.iterdir()) == before  # nothing written
