"""``pyrogen sample``: draw rows from a fitted model, as CSV, NPY or a PNG grid."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import torch

from pyrogen.cli.common import _load_model, _positive_int
from pyrogen.diagnostics.plots import image_shape, plot_image_grid
from pyrogen.diagnostics.report import figure_writer, takes_argument
from pyrogen.io import atomic_write
from pyrogen.models import GenerativeModel

#: ``pyrogen sample --out`` formats: tables (rows of numbers) and images.
TABLE_FORMATS = (".csv", ".npy")
IMAGE_FORMATS = (".npy", ".png")
#: Size in inches of the PNG grid of ``pyrogen sample --out FILE.png``.
SAMPLE_FIGURE = (6.0, 6.0)


def _add_sample_command(commands: argparse._SubParsersAction) -> None:
    """The ``sample`` sub-command, added to ``commands``."""
    sample = commands.add_parser(
        "sample",
        help="draw new rows from a fitted model",
        description="Draw new rows from a fitted model. Tabular models: CSV to stdout, or "
        f"--out FILE ({' or '.join(TABLE_FORMATS)}). Image models: --out FILE.npy (an array "
        "(N, *data_shape)) or FILE.png (a grid of the images).",
    )
    sample.add_argument(
        "model_path",
        metavar="RUN_OR_MODEL_FILE",
        type=Path,
        help="a run folder (its model.pt is used) or a model file",
    )
    sample.add_argument(
        "-n",
        "--num-rows",
        type=_positive_int,
        required=True,
        metavar="N",
        help="number of rows (images) to draw",
    )
    sample.add_argument(
        "--out",
        type=Path,
        metavar="FILE",
        help=f"write to this file: {' or '.join(TABLE_FORMATS)} for tabular models, "
        f"{' or '.join(IMAGE_FORMATS)} for image models (required for those)",
    )
    sample.add_argument(
        "--mean",
        action="store_true",
        help="draw the decoder's mean of p(x | z) rather than a sample of x (models with a "
        "decoder, e.g. vae); smoother images",
    )
    sample.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    sample.set_defaults(run=_run_sample)


def _run_sample(args: argparse.Namespace) -> int:
    model, run = _load_model(args.model_path)
    shape = _drawable(model, run)
    formats = IMAGE_FORMATS if shape is not None else TABLE_FORMATS
    kind = "an image model" if shape is not None else f"a tabular model ({model.family})"
    suffix = None if args.out is None else args.out.suffix.lower()
    if (args.out is None and shape is not None) or (suffix is not None and suffix not in formats):
        got = (
            "no --out (CSV on stdout is for tabular models)"
            if suffix is None
            else repr(str(args.out))
        )
        raise ValueError(
            f"--out: expected a file ending in {' or '.join(formats)} for {kind}, got {got}"
        )
    options = {}
    if args.mean:
        if not takes_argument(model.sample, "mean"):
            raise ValueError(
                f"--mean: expected a model with a decoder (e.g. vae), got {model.family}"
            )
        options["mean"] = True
    pyro.set_rng_seed(args.seed)
    with torch.no_grad():
        rows = model.sample(args.num_rows, **options).detach().cpu()
    if suffix == ".png":
        figure_writer(lambda ax: plot_image_grid(rows, ax, shape=shape), SAMPLE_FIGURE)(args.out)
        return 0
    if suffix == ".npy":
        with atomic_write(args.out) as handle:
            np.save(handle, rows.numpy())
        return 0
    table = rows.numpy().reshape(rows.shape[0], -1)
    columns = run.get("columns")
    if columns is None or len(columns) != table.shape[1]:
        columns = [f"x{i}" for i in range(table.shape[1])]
    if args.out is None:
        _write_csv(sys.stdout, table, columns)
    else:
        with atomic_write(args.out, "w") as handle:
            _write_csv(handle, table, columns)
    return 0


def _drawable(model: GenerativeModel, run: dict[str, Any]) -> tuple[int, ...] | None:
    """How to draw one example of an image model (from its run, else its data_shape)."""
    if run.get("image_shape"):
        return tuple(run["image_shape"])
    data_shape = getattr(model, "data_shape", None)
    return None if data_shape is None else image_shape(data_shape)


def _write_csv(handle: Any, table: np.ndarray, columns: list[str]) -> None:
    # A header row, so `pyrogen evaluate --data` and pyrogen.data.load read the file back.
    np.savetxt(handle, table, delimiter=",", header=",".join(columns), comments="", fmt="%.8g")
