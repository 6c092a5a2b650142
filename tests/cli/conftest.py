"""Fixtures of the command-line tests: runs that several tests reuse, made once."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display in tests

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from pyrogen.cli import main  # noqa: E402
from pyrogen.data.datasets import old_faithful  # noqa: E402
from tests.cli.helpers import (  # noqa: E402
    QUICK,
    VAE_QUICK,
    VARIANT_QUICK,
    class_images,
    cvae_completion_run,
    write_arrays,
)

# Runs that later tests reuse: (run folder, what it printed), made once per session.
_VAE_RUNS: dict[str, tuple[Path, str]] = {}
_VARIANT_RUNS: dict[str, tuple[Path, str]] = {}


@pytest.fixture(scope="session")
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


@pytest.fixture(scope="session")
def grey_images(tmp_path_factory) -> Path:
    """120 random 8 x 8 images with values in [0, 1], as an NPY file."""
    path = tmp_path_factory.mktemp("npy") / "images.npy"
    np.save(path, np.random.default_rng(0).random((120, 8, 8), dtype=np.float32))
    return path


@pytest.fixture(scope="session")
def npy_run(grey_images, tmp_path_factory) -> Path:
    """``pyrogen fit vae --data images.npy`` with a conv encoder; needs no shared data."""
    out = tmp_path_factory.mktemp("vae") / "npy"
    argv = ["fit", "vae", "--data", str(grey_images), "--encoder", "conv", "--binarize"]
    argv += ["threshold", "--epochs", "2", "--batch-size", "32", "--iw-samples", "5"]
    argv += ["--latent-dim", "3", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    return out


@pytest.fixture(scope="session")
def labelled_npz(tmp_path_factory) -> Path:
    """90 images with their labels in one NPZ archive, arrays x and y."""
    path = tmp_path_factory.mktemp("npz") / "classes.npz"
    images, labels = class_images()
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


@pytest.fixture
def table_inputs(tmp_path, auto_run, faithful_csv) -> dict[str, str]:
    """Placeholders of the mixture's bad command lines: an occupied folder, a CSV of three
    columns, a CSV of one row, the mixture's run."""
    (tmp_path / "occupied.txt").write_text("an earlier run")
    wide = tmp_path / "wide.csv"
    np.savetxt(wide, np.ones((4, 3)), delimiter=",", header="a,b,c", comments="")
    one_row = tmp_path / "one_row.csv"
    np.savetxt(one_row, np.ones((1, 2)), delimiter=",", header="a,b", comments="")
    fill = {"{tmp}": str(tmp_path), "{csv}": str(faithful_csv), "{run}": str(auto_run)}
    return {**fill, "{wide}": str(wide), "{one_row}": str(one_row)}


@pytest.fixture
def vae_inputs(tmp_path, npy_run, auto_run, faithful_csv) -> dict[str, str]:
    """Placeholders of the VAE's bad command lines: runs, and arrays of bytes, of a table
    and of grey images."""
    fill = {"{tmp}": str(tmp_path), "{vae}": str(npy_run), "{gmm}": str(auto_run)}
    fill["{csv}"] = str(faithful_csv)
    write_arrays(tmp_path, fill, {
        "bytes": np.linspace(0, 255, 4 * 8 * 8, dtype=np.float32).reshape(4, 8, 8),
        "table": np.full((10, 5), 0.5, dtype=np.float32),
        "images": np.full((10, 8, 8), 0.5, dtype=np.float32),
    })  # fmt: skip
    return fill


@pytest.fixture
def variant_inputs(tmp_path, variant_run, labelled_npz, npy_run) -> dict[str, str]:
    """Placeholders of the VAE variants' bad command lines: runs, the labelled archive, and
    images with labels that do not fit them."""
    images, labels = class_images()
    fill = {"{tmp}": str(tmp_path), "{npz}": str(labelled_npz), "{vae}": str(npy_run)}
    fill["{cvae_top}"] = str(cvae_completion_run(variant_run)[0])
    write_arrays(tmp_path, fill, {
        "images": images,
        "short": labels[:10],
        "negative": np.where(np.arange(90) == 4, -1, labels),
        "halves": labels + 0.5,
        "same": np.full(90, 200),
    })  # fmt: skip
    return fill
