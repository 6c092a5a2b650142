"""``pyrogen fit FAMILY``: one command for every family of :data:`pyrogen.models.REGISTRY`.

Its model options come from the family's constructor (:mod:`pyrogen.cli.options`), its
training options go straight to :func:`pyrogen.fit` (which checks them), and what a
signature cannot say comes from the family's :class:`~pyrogen.cli.families.FamilySpec`.
The run folder is written by :func:`pyrogen.diagnostics.write_run`.
"""

from __future__ import annotations

import argparse
import datetime
import inspect
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyro
import torch

from pyrogen.cli.data import (
    SPLIT_DATA_HELP,
    TABLE_DATA_HELP,
    add_image_options,
    add_labels_options,
    as_option_errors,
    binarize_mode,
    check_values,
    dataset_of,
    load_split,
    load_table,
)
from pyrogen.cli.families import FamilySpec, Setup, families, spec_of
from pyrogen.cli.options import add_model_options, model_options, positive_float, positive_int
from pyrogen.cli.output import describe_fit
from pyrogen.data import (
    ImageSplit,
    as_rows,
    binarize,
    describe_binarization,
    dynamic_binarization,
    image_data_shape,
    split_train_test,
)
from pyrogen.diagnostics.report import SUMMARY_FILE, check_run_folder, write_run
from pyrogen.infer.callbacks import Callback
from pyrogen.infer.distributed import STRATEGIES, check_scale_out, cluster, join, spawn
from pyrogen.infer.engine import fit
from pyrogen.infer.precision import PRECISIONS
from pyrogen.models import GenerativeModel

#: Options of :func:`pyrogen.fit` whose errors are reported as the command's options.
_FIT_ARGUMENTS = ("steps", "epochs", "batch_size", "lr", "validation")


def add_fit_command(commands: argparse._SubParsersAction) -> None:
    """The ``fit`` sub-command, with one sub-command per family."""
    fit_parser = commands.add_parser(
        "fit",
        help="fit a model family to data and write a run folder",
        description="Fit a model family to data and write a run folder (summary.json, "
        "model.pt, plots; inference_data.nc for the mixture).",
    )
    commands = fit_parser.add_subparsers(dest="family", metavar="FAMILY", required=True)
    for name, family in families().items():
        spec = spec_of(name)
        doc = (family.__doc__ or name).strip().splitlines()[0]
        parser = commands.add_parser(name, help=doc, description=doc)
        add_common_options(parser, name, spec)
        if spec.images:
            add_image_options(parser, family.__name__)
        added = add_model_options(parser, family, spec)
        own = parser.add_argument_group(f"{family.__name__} workflow")
        if spec.labels is not None:
            add_labels_options(own, spec.labels, num_classes=spec.num_classes)
        if spec.add_options is not None:
            spec.add_options(own)
        parser.set_defaults(run=run_fit, model_arguments=added)


def add_scale_out_options(parser: argparse.ArgumentParser, devices_help: str) -> Any:
    """--devices and --num-nodes (of fit, sample and evaluate); returns their group."""
    scale = parser.add_argument_group("scaling out")
    scale.add_argument("--devices", type=positive_int, default=1, metavar="N", help=devices_help)
    scale.add_argument(
        "--num-nodes",
        type=positive_int,
        default=1,
        metavar="M",
        help="machines; run the same command on each with MASTER_ADDR, MASTER_PORT and "
        "NODE_RANK set; only the first process writes or prints results (default 1)",
    )
    return scale


def add_common_options(parser: argparse.ArgumentParser, name: str, spec: FamilySpec) -> None:
    """The data, output and training options every family shares."""
    data = parser.add_argument_group("data and output")
    help_ = SPLIT_DATA_HELP if spec.images else TABLE_DATA_HELP
    data.add_argument("--data", type=Path, metavar="PATH", help=help_)
    data.add_argument("--columns", metavar="A,B", help="columns of a CSV/TSV --data file to use")
    data.add_argument(
        "--out", type=Path, metavar="DIR",
        help=f"run folder to create; default runs/{name}-YYYYmmdd-HHMMSS",
    )  # fmt: skip
    data.add_argument("--quiet", action="store_true", help="no progress bars; print the folder")
    training = parser.add_argument_group("training (see pyrogen.fit)")
    epochs = f"default {spec.default_epochs}" if spec.default_epochs else "exclusive with --steps"
    for option, kind, text in (
        ("--steps", positive_int, "optimisation steps (default: the family's)"),
        ("--epochs", positive_int, f"passes over the training rows ({epochs})"),
        ("--batch-size", positive_int, "rows per step (default: the family's)"),
        ("--lr", positive_float, "learning rate (default: the family's)"),
        ("--validation-share", _fraction, "hold out this share of the training rows "
         "(seeded) and stop when their loss has not improved for --patience epochs"),
        ("--patience", positive_int, "epochs without held-out improvement (default 20)"),
        ("--checkpoint", Path, "checkpoint file to write during training"),
    ):  # fmt: skip
        training.add_argument(option, type=kind, metavar=option[2:3].upper(), help=text)
    training.add_argument("--resume", action="store_true", help="resume from --checkpoint")
    training.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    training.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="(default cpu)")
    if spec.images:
        family = families()[name]
        training.add_argument(
            flag := "--" + family.score_samples_name.replace("_", "-"),
            type=positive_int,
            default=family.default_score_samples,
            metavar="K",
            help=f"{flag[2:].replace('-', ' ')} of the test bounds (default %(default)s)",
        )
    scale = add_scale_out_options(parser, "training processes, one per GPU with --device cuda")
    scale.add_argument("--strategy", choices=STRATEGIES, default="auto", help="(default auto)")
    scale.add_argument("--precision", choices=PRECISIONS, default="32", help="(default 32)")


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a fraction between 0 and 1, got {text!r}")
    return value


# --- running it ---------------------------------------------------------------------------------
def run_fit(args: argparse.Namespace) -> int:
    """Fit, write the run folder, print its summary (the first process, with several)."""
    out = args.out if args.out is not None else _default_run_folder(args.family)
    check_run_folder(out)  # fail before training, not after
    strategy, devices, num_nodes = check_scale_out(args.strategy, args.devices, args.num_nodes)
    if strategy != "ddp" or devices * num_nodes == 1:
        return write_fitted(args, out)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: expected an available device, got 'cuda' (no CUDA)")
    # Every process runs the whole command and their fit calls train together.
    args = argparse.Namespace(**{**vars(args), "out": out, "run": None})
    if join(devices * num_nodes, args.device, "--devices, --num-nodes").world_size == 1:
        spawn(fit_process, (args,), devices=devices, num_nodes=num_nodes, device_type=args.device)
    else:
        fit_process(args)
    return 0


def fit_process(args: argparse.Namespace) -> dict[str, Any]:
    """One training process of ``pyrogen fit --devices N``: the first writes the run."""
    if cluster().is_main:
        write_fitted(args, args.out)
    else:
        fit_family(args)
    return {}


def _default_run_folder(family: str) -> Path:
    return Path("runs") / f"{family}-{datetime.datetime.now():%Y%m%d-%H%M%S}"


@dataclass
class Fitted:
    """What :func:`fit_family` hands back to be written (by ``write_run``) and printed."""

    model: GenerativeModel
    result: Any
    data: torch.Tensor  # the training rows (N, *data_shape)
    idata: Any = None
    columns: list[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    test_data: torch.Tensor | None = None
    test_labels: torch.Tensor | None = None
    image_shape: tuple[int, ...] | None = None
    iw_samples: int = 100


def write_fitted(args: argparse.Namespace, out: Path) -> int:
    """Fit, write the run folder and print what was done."""
    fitted = fit_family(args)
    if fitted.test_data is not None and not args.quiet and sys.stderr.isatty():
        print(
            f"scoring {fitted.test_data.shape[0]} test rows and writing the run folder...",
            file=sys.stderr,
        )
    path = write_run(
        out, model=fitted.model, result=fitted.result, data=fitted.data,
        columns=fitted.columns, idata=fitted.idata, extra={"seed": args.seed, **fitted.extra},
        test_data=fitted.test_data, labels=fitted.test_labels, image_shape=fitted.image_shape,
        iw_samples=fitted.iw_samples, seed=args.seed,
    )  # fmt: skip
    if args.quiet:
        print(path)
    else:
        summary = json.loads((path / SUMMARY_FILE).read_text())
        print(describe_fit(summary, tuple(fitted.data.shape), path))
    return 0


class Schedule(Callback):
    """Records the engine's epoch length and batch size, for the run's summary."""

    all_processes = True

    def on_fit_start(self, loop: Any) -> None:
        self.steps_per_epoch = loop.config.steps_per_epoch
        self.batch_size = loop.config.batch_size


def _fit_options(args: argparse.Namespace, spec: FamilySpec) -> dict[str, Any]:
    """The keywords of :func:`pyrogen.fit` the options give (the others: its defaults)."""
    epochs = args.epochs
    if epochs is None and args.steps is None:
        epochs = spec.default_epochs
    options = {
        "steps": args.steps, "epochs": epochs, "batch_size": args.batch_size, "lr": args.lr,
        "checkpoint": args.checkpoint, "device": args.device, "strategy": args.strategy,
        "devices": args.devices, "num_nodes": args.num_nodes, "precision": args.precision,
    }  # fmt: skip
    options = {key: value for key, value in options.items() if value is not None}
    return {**options, "seed": args.seed, "resume": args.resume, "progress": not args.quiet}


def fit_family(args: argparse.Namespace) -> Fitted:
    """Read the data, build the family's model from the options and fit it."""
    family, spec = families()[args.family], spec_of(args.family)
    options = model_options(args, args.model_arguments)
    for name, other in spec.same_as.items():
        if name not in options and other in options:
            options[name] = options[other]
    fit_options = _fit_options(args, spec)
    if args.quiet is False:
        fit_options.pop("progress")  # the engine's default: bars on a terminal
    if spec.images:
        fitted, train, setup = _image_data(args, family, spec, options, fit_options)
    else:
        x, source, columns = load_table(args.data, args.columns)
        fitted = Fitted(None, None, x, columns=columns, extra={"data": source})
        train, setup = x, spec.configure(args, None)
    if args.validation_share is not None:
        with as_option_errors(_FIT_ARGUMENTS):
            held = split_train_test(train, seed=args.seed, test_fraction=args.validation_share)
        train, fit_options["validation"] = held.train, held.test
        fit_options["early_stopping"] = args.patience or 20
    options.update(setup.options)
    if "data_shape" in inspect.signature(family).parameters:
        options.setdefault("data_shape", tuple(train.shape[1:]))
    schedule = Schedule()
    fit_options["callbacks"] = [schedule, *setup.callbacks]
    with as_option_errors(_FIT_ARGUMENTS):
        if spec.train is not None:
            fitted.model, fitted.result, fitted.idata, extra = spec.train(
                args, family, options, train, fit_options
            )
            fitted.extra.update(extra)
        else:
            pyro.set_rng_seed(args.seed)  # the networks' initial weights are drawn here
            fitted.model = family(**options)
            fitted.result = fit(fitted.model, train, setup.train_labels, **fit_options)
    if spec.images:
        rows = train.shape[0]
        fitted.extra["epochs"] = fitted.result.steps / schedule.steps_per_epoch
        fitted.extra["batch_size"] = min(schedule.batch_size or rows, rows)
    fitted.extra.update(setup.extra)
    for callback in setup.callbacks:  # what the workflow's callbacks did
        fitted.extra.update(callback.summary)
    return fitted


def _image_data(
    args: argparse.Namespace, family: type, spec: FamilySpec, options: dict, fit_options: dict
) -> tuple[Fitted, torch.Tensor, Setup]:
    """Load, split, check and shape the images; the test rows binarized once, the training
    rows once or (dynamic) afresh every epoch by ``fit_options["epoch_transform"]``."""
    dataset = dataset_of(args)
    if spec.before_data is not None:
        options.update(spec.before_data(args, dataset))
    signature = inspect.signature(family).parameters
    likelihood = options.get("likelihood", signature["likelihood"].default)
    mode = binarize_mode(args.binarize, dataset, likelihood)
    split = load_split(args, dataset, seed=args.seed)
    source = str(args.data if args.data is not None else args.data_dir)
    check_values([split.train, split.test], source, mode, likelihood)
    split = _limited(split, args.limit)
    setup = spec.configure(args, split)
    example_shape = tuple(split.train.shape[1:])
    shape = options.get("data_shape", example_shape)
    if "encoder" in signature:
        with as_option_errors():
            shape = image_data_shape(example_shape, options.get("encoder", "mlp"))
    train = as_rows(split.train, shape, source)
    test = as_rows(binarize(split.test, mode, seed=args.seed), shape, source)
    options["data_shape"] = shape
    if mode == "dynamic":
        fit_options["epoch_transform"] = dynamic_binarization
    how = describe_binarization(mode, seed=args.seed, likelihood=likelihood, x=train)
    extra = {
        "data": split.description,
        "dataset": split.dataset,
        "preprocessing": {"binarize": mode, "description": how},
        "limit": args.limit,
    }
    fitted = Fitted(
        None, None, train, columns=None if args.columns is None else args.columns.split(","),
        extra=extra, test_data=test, test_labels=setup.test_labels,
        image_shape=example_shape if len(example_shape) in (2, 3) else None,
        iw_samples=getattr(args, family.score_samples_name),
    )  # fmt: skip
    return fitted, binarize(train, mode) if mode != "dynamic" else train, setup


def _limited(split: ImageSplit, limit: int | None) -> ImageSplit:
    """``split`` with only its first ``limit`` training rows."""
    if limit is None or limit >= split.train.shape[0]:
        return split
    labels = None if split.train_labels is None else split.train_labels[:limit]
    described = f"; training on its first {limit} of {split.train.shape[0]} rows (--limit)"
    return ImageSplit(
        split.train[:limit], split.test, labels, split.test_labels,
        split.description + described, split.dataset, split.labels_source,
    )  # fmt: skip
