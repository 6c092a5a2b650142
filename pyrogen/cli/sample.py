"""``pyrogen sample``: draw rows from a fitted model, as CSV, NPY or a PNG grid; of chosen
classes or components for the VAE variants, and completions of given examples for a
conditional VAE that generates only part of each image."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import torch

from pyrogen.cli.common import (
    _add_scale_out_options,
    _device,
    _load_model,
    _non_negative_int,
    _positive_int,
)
from pyrogen.cli.labels import _add_labels_options, _check_classes
from pyrogen.cli.vae import DATASETS, _add_binarize_option, _add_data_dir_option, _images_for
from pyrogen.diagnostics.plots import image_shape, plot_image_grid
from pyrogen.diagnostics.report import (
    conditions_on_labels,
    figure_writer,
    given_mask,
    takes_argument,
)
from pyrogen.infer import distributed
from pyrogen.infer.distributed import cluster
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
        "--device", choices=("cpu", "cuda"), default="cpu", help="device to draw on (default cpu)"
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
    reverse = sample.add_argument_group("diffusion models")
    reverse.add_argument(
        "--steps",
        type=_positive_int,
        metavar="S",
        help="reverse steps: with --method ddim any number up to the model's T (default 50); "
        "ancestral sampling takes all T",
    )
    reverse.add_argument(
        "--method",
        choices=("ancestral", "ddim"),
        help="ancestral (DDPM, all T steps) or ddim (deterministic, --steps steps); default "
        "ddim when --steps is given, else ancestral",
    )
    reverse.add_argument(
        "--guidance",
        type=float,
        metavar="S",
        help="classifier-free guidance scale of a class-conditional model: 0 unconditional, "
        "1 conditional (default), above 1 sharper classes",
    )
    variants = sample.add_argument_group("VAE variants (cvae, ssvae, gmvae)")
    variants.add_argument(
        "--label",
        "--component",
        dest="label",
        type=_non_negative_int,
        metavar="K",
        help="draw every row from class K (cvae with labels, ssvae) or mixture component K "
        "(gmvae). Default: the classes in turn, 0, 1, ..., C-1, 0, ... (a PNG gets one "
        "column per class); a gmvae's components are drawn from the prior's weights; a "
        "cvae completing --data takes each example's own label",
    )
    given = sample.add_argument_group(
        "examples to complete (cvae fitted with --observed: it generates only the missing "
        "part of given examples, so it needs them)"
    )
    given.add_argument(
        "--data",
        type=Path,
        metavar="PATH",
        help="images whose first N rows are completed (NPY/NPZ/CSV, as for fit)",
    )
    _add_data_dir_option(given, "its first N test images are completed")
    given.add_argument(
        "--dataset", choices=DATASETS, help="what --data-dir holds; default the run's, else mnist"
    )
    _add_binarize_option(given, "Default the run's (same seed, so the same test images).")
    _add_labels_options(given, "default for the completions' labels", num_classes=False)
    _add_scale_out_options(
        sample,
        "processes that share the draw: process r draws its share of the rows seeded with "
        "--seed + r, so the rows differ from one process's draw (default 1)",
    )
    sample.set_defaults(run=_run_sample)


def _is_main_process(args: argparse.Namespace) -> bool:
    """Whether this process writes or prints the result of a sharded command: the first
    process of a group, on the first machine."""
    return cluster().is_main and (args.num_nodes == 1 or os.environ.get("NODE_RANK", "0") == "0")


def _run_sample(args: argparse.Namespace) -> int:
    model, run = _load_model(args.model_path)
    device = _device(args.device)
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
    options |= _reverse_process_options(args, model)
    columns_per_class = _conditions(args, model, run, options)
    if args.devices * args.num_nodes > 1:
        rows = distributed.sample(
            model,
            args.num_rows,
            devices=args.devices,
            num_nodes=args.num_nodes,
            device=str(device),
            seed=args.seed,
            **options,
        )
        if not _is_main_process(args):
            return 0
    else:
        model.to(device)  # labels and given values follow the model's device
        pyro.set_rng_seed(args.seed)
        with torch.no_grad():
            rows = model.sample(args.num_rows, **options).detach().cpu()
    if suffix == ".png":
        ncols = columns_per_class

        def draw(ax: Any) -> Any:
            return plot_image_grid(rows, ax, shape=shape, ncols=ncols)

        figure_writer(draw, SAMPLE_FIGURE)(args.out)
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


def _conditions(
    args: argparse.Namespace, model: GenerativeModel, run: dict[str, Any], options: dict
) -> int | None:
    """Add the labels (``y``) and given examples (``observed``) of the draw to ``options``.

    Returns:
        the columns of a PNG with one column per class, or None for a square grid.
    """
    n = args.num_rows
    classes = getattr(model, "num_classes", None)
    if classes is None and hasattr(model, "n_components"):
        classes = model.n_components
    takes_y = takes_argument(model.sample, "y") and classes is not None
    if args.label is not None:
        if not takes_y:
            raise ValueError(
                f"--label: expected a model with classes or components (cvae with labels, "
                f"ssvae, gmvae), got {model.family}"
            )
        if args.label >= classes:
            what = "component" if hasattr(model, "n_components") else "class"
            raise ValueError(f"--label: expected a {what} in 0..{classes - 1}, got {args.label}")
    given = given_mask(model)
    data_options = [
        f"--{name.replace('_', '-')}" for name in ("data", "data_dir") if getattr(args, name)
    ]
    ncols = None
    if given is None:
        if data_options:
            raise ValueError(
                f"{', '.join(data_options)}: expected no examples for a {model.family} model "
                "that generates whole images, got some (only a cvae fitted with --observed "
                "completes examples)"
            )
        if args.label is not None:
            options["y"] = torch.full((n,), args.label, dtype=torch.long)
        elif takes_y and getattr(model, "num_classes", None) is not None:
            options["y"] = torch.arange(n) % classes
            ncols = classes
        return ncols
    if not data_options:
        raise ValueError(
            f"--data, --data-dir: a cvae given the {model.observed} half of each image "
            "generates only the rest, so it needs examples to complete (--data FILE, or "
            "--data-dir DIR for the test images); got neither"
        )
    # Binarized with the run's seed (--seed seeds only the draw), like the run's test rows.
    examples = _images_for(argparse.Namespace(**{**vars(args), "seed": None}), model, run)
    if n > examples.x.shape[0]:
        raise ValueError(
            f"-n: expected at most {examples.x.shape[0]}, the examples to complete in "
            f"{examples.description}, got {n}"
        )
    options["observed"] = examples.x[:n]
    if args.label is not None:
        options["y"] = torch.full((n,), args.label, dtype=torch.long)
    elif conditions_on_labels(model):
        if examples.labels is not None:
            labels = _check_classes(examples.labels, classes, examples.labels_source)
            options["y"] = labels[:n]
        else:
            options["y"] = torch.arange(n) % classes
            ncols = classes
    return ncols


def _reverse_process_options(args: argparse.Namespace, model: GenerativeModel) -> dict:
    """--steps, --method and --guidance, for models that sample by a reverse process."""
    given = {
        flag: value
        for flag, value in (
            ("--steps", args.steps),
            ("--method", args.method),
            ("--guidance", args.guidance),
        )
        if value is not None
    }
    if not takes_argument(model.sample, "guidance"):
        if given:
            raise ValueError(f"{', '.join(given)}: expected a diffusion model, got {model.family}")
        return {}
    options: dict[str, Any] = {"steps": args.steps}
    options["method"] = args.method or ("ddim" if args.steps is not None else "ancestral")
    if args.guidance is not None:
        if getattr(model, "num_classes", None) is None:
            raise ValueError(
                "--guidance: expected a class-conditional model, got an unconditional one"
            )
        options["guidance"] = args.guidance
    return options


def _drawable(model: GenerativeModel, run: dict[str, Any]) -> tuple[int, ...] | None:
    """How to draw one example of an image model (from its run, else its data_shape)."""
    if run.get("image_shape"):
        return tuple(run["image_shape"])
    data_shape = getattr(model, "data_shape", None)
    return None if data_shape is None else image_shape(data_shape)


def _write_csv(handle: Any, table: np.ndarray, columns: list[str]) -> None:
    # A header row, so `pyrogen evaluate --data` and pyrogen.data.load read the file back.
    np.savetxt(handle, table, delimiter=",", header=",".join(columns), comments="", fmt="%.8g")
