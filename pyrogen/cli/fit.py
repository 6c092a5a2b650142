"""``pyrogen fit FAMILY``: one command for every family of :data:`pyrogen.models.REGISTRY`;
training options go straight to :func:`pyrogen.fit`, the run folder is written by
:func:`pyrogen.diagnostics.write_run`."""

from __future__ import annotations

import argparse
import builtins
import dataclasses
import datetime
import inspect
import json
import sys
from pathlib import Path
from typing import Any

import pyro
import torch
import torch.multiprocessing as mp

from pyrogen import data
from pyrogen.cli import options as opt
from pyrogen.cli.families import FamilySpec, Setup, spec_of
from pyrogen.cli.resume import (
    CHECKPOINT_FILE,
    end_run,
    resume_command,
    resumed_arguments,
    start_run,
)
from pyrogen.diagnostics.report import SUMMARY_FILE, check_run_folder, write_run
from pyrogen.diagnostics.text import describe_fit
from pyrogen.infer.callbacks import Callback
from pyrogen.infer.checkpointing import TrainingInterrupted
from pyrogen.infer.compiled import COMPILE_MODES
from pyrogen.infer.distributed import STRATEGIES, check_scale_out, cluster, join, spawn
from pyrogen.infer.engine import fit
from pyrogen.infer.precision import PRECISIONS
from pyrogen.models import REGISTRY

#: Options of :func:`pyrogen.fit` whose errors are reported as the command's options.
_FIT_ARGUMENTS = ("steps", "epochs", "batch_size", "lr", "validation", "warmup_epochs")
#: Epochs of a family that reads images when neither --steps nor --epochs is given.
IMAGE_EPOCHS = 10


def add_fit_command(commands: argparse._SubParsersAction) -> None:
    """The ``fit`` sub-command, with one sub-command per family."""
    fit_parser = commands.add_parser(
        "fit",
        help="fit a model family to data and write a run folder",
        description="Fit a model family to data and write a run folder (summary.json, "
        "model.pt, plots; inference_data.nc for the mixture).",
    )
    fit_parser.add_argument(
        "--resume", type=Path, metavar="RUN",
        help="continue the run in progress RUN (its folder to be, RUN.partial or the "
        "checkpoint in it) exactly where it stopped, with the options it was started with",
    )  # fmt: skip
    fit_parser.set_defaults(run=run_fit, family=None)
    commands = fit_parser.add_subparsers(dest="family", metavar="FAMILY")
    for name, family in REGISTRY.items():
        spec = spec_of(name)
        doc = (family.__doc__ or name).strip().splitlines()[0]
        parser = commands.add_parser(name, help=doc, description=doc)
        add_common_options(parser, name, family, spec)
        if family.reads_images:
            opt.add_image_options(
                parser.add_argument_group(f"{family.__name__} data"),
                "trains on the train split and scores the test split",
                "Default dynamic for --dataset mnist with the bernoulli likelihood, else none.",
                limit=True,
            )
        added = opt.add_model_options(parser, family, spec)
        own = parser.add_argument_group(f"{family.__name__} workflow")
        if spec.labels is not None:
            opt.add_labels_options(own, spec.labels, num_classes=spec.num_classes)
        opt.add_all(own, *spec.options)
        parser.set_defaults(run=run_fit, model_arguments=added)


def add_common_options(parser: Any, name: str, family: type, spec: FamilySpec) -> None:
    """The data, output and training options every family shares."""
    images = family.reads_images
    opt.add_all(
        parser.add_argument_group("data and output"),
        ("--data", opt.SPLIT_DATA_HELP if images else opt.TABLE_DATA_HELP, {"type": Path}),
        ("--columns", "columns of a CSV/TSV --data file to use", {"metavar": "A,B"}),
        ("--key", "the array of an NPZ --data file holding several to use", {"metavar": "NAME"}),
        ("--out", f"run folder to create; default runs/{name}-YYYYmmdd-HHMMSS", {"type": Path}),
        ("--quiet", "no progress bars; print only the run folder", {"action": "store_true"}),
        *[("--test-share", "share of the --data rows held out (seeded): not trained on, "
           "scored at the end (held-out nats; 0: train on every row; default %(default)s)",
           {"type": opt.share_or_none, "default": data.TEST_FRACTION})][: int(not images)],
    )  # fmt: skip
    epochs = f"default {IMAGE_EPOCHS}" if images else "exclusive with --steps"
    opt.add_all(
        parser.add_argument_group("training (see pyrogen.fit; defaults: the family's)"),
        ("--steps", "optimisation steps", {"type": opt.positive_int}),
        ("--epochs", f"passes over the training rows ({epochs})", {"type": opt.positive_int}),
        ("--batch-size", "rows per step", {"type": opt.positive_int}),
        ("--lr", "learning rate", {"type": opt.positive_float}),
        ("--validation-share", "hold out this share of the training rows (seeded) and stop "
         "when their loss has not improved for --patience epochs", {"type": opt.share}),
        ("--patience", "epochs without held-out improvement (default 20)",
         {"type": opt.positive_int, "default": 20}),
        ("--checkpoint-every", "steps between saves of the training state to RUN.partial "
         "(default: only when stopped by Ctrl-C or SIGTERM); `pyrogen fit --resume RUN` "
         "continues from it", {"type": opt.positive_int, "metavar": "N"}),
        ("--seed", "random seed (default 0)", {"type": int, "default": 0}),
        ("--device", "(default cpu)", {"choices": ("cpu", "cuda"), "default": "cpu"}),
        *[(opt.flag(family.score_samples_name), "of the test bounds (default %(default)s)",
           {"type": opt.positive_int, "metavar": "K",
            "default": spec.score_samples or family.default_score_samples})][: int(images)],
    )  # fmt: skip
    opt.add_all(
        opt.add_scale_out_options(parser, "training processes (one per GPU with --device cuda)"),
        ("--strategy", "(default auto)", {"choices": STRATEGIES, "default": "auto"}),
        ("--precision", "(default 32)", {"choices": PRECISIONS, "default": "32"}),
        (
            "--compile",
            "record the training step once and replay it (pyrogen.fit's compile; "
            "eager where the step cannot be recorded); --compile inductor also compiles it "
            "with torch.compile",
            {"nargs": "?", "const": "replay", "choices": COMPILE_MODES, "metavar": "MODE"},
        ),
    )


# --- running it ---------------------------------------------------------------------------------
def run_fit(args: argparse.Namespace) -> int:
    """Fit (or resume), write the run folder, print its summary (the first process, with
    several); the run in progress is kept in ``RUN.partial`` (:mod:`pyrogen.cli.resume`)."""
    if args.resume is not None:
        if args.family is not None:
            raise ValueError("--resume: expected no FAMILY (the run's own options are used)")
        from pyrogen.cli import build_parser  # the whole command line, to read the stored one

        args = resumed_arguments(args.resume, build_parser())
    elif args.family is None:
        raise ValueError("fit: expected a FAMILY (see pyrogen fit --help) or --resume RUN")
    else:
        args.out = (
            args.out or Path("runs") / f"{args.family}-{datetime.datetime.now():%Y%m%d-%H%M%S}"
        )
        check_run_folder(args.out)  # fail before training, not after
        args.partial, args.resuming = start_run(args.out, args.argv), False
    try:
        code = _run_fit(args, args.out)
    except KeyboardInterrupt as error:
        saved = (args.partial / CHECKPOINT_FILE).exists()
        end_run(args.partial, succeeded=False)
        if not saved:
            raise
        step = f" after step {error.step}" if isinstance(error, TrainingInterrupted) else ""
        raise KeyboardInterrupt(
            f"interrupted{step}; the training state is kept in {str(args.partial)!r}; "
            f"continue with: {resume_command(args.out)}"
        ) from None
    except BaseException:
        end_run(args.partial, succeeded=False)
        raise
    end_run(args.partial, succeeded=True)
    return code


def _run_fit(args: argparse.Namespace, out: Path) -> int:
    """Fit in this process, or in ``--devices`` processes, and write the run."""
    strategy, devices, num_nodes = check_scale_out(args.strategy, args.devices, args.num_nodes)
    if strategy != "ddp" or devices * num_nodes == 1:
        return write_fitted(args, out)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: expected an available device, got 'cuda' (no CUDA)")
    args = argparse.Namespace(**{**vars(args), "out": out, "run": None})  # run by every process
    if args.data is not None and not args.data.is_file():  # here, not in every process
        raise ValueError(f"--data: expected a data file, got {str(args.data)!r} (not a file)")
    if join(devices * num_nodes, args.device, "--devices, --num-nodes").world_size == 1:
        try:
            spawn(fit_process, (args,), devices=devices, num_nodes=num_nodes,
                  device_type=args.device)  # fmt: skip
        except mp.ProcessRaisedException as error:  # a process's error, as it raised it
            kind, _, message = str(error).strip().splitlines()[-1].partition(": ")
            known = getattr(builtins, kind, None)
            kept = known in (ValueError, OSError, FileNotFoundError, FloatingPointError)
            raise (known if kept else RuntimeError)(message) from None
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


def write_fitted(args: argparse.Namespace, out: Path) -> int:
    """Fit, write the run folder and print what was done."""
    run = fit_family(args)
    if run.get("test_data") is not None and not args.quiet and sys.stderr.isatty():
        print(f"scoring {len(run['test_data'])} test rows, writing the run...", file=sys.stderr)
    path = write_run(out, **run, seed=args.seed)
    if args.quiet:
        print(path)
    else:
        summary = json.loads((path / SUMMARY_FILE).read_text())
        print(describe_fit(summary, tuple(run["data"].shape), path))
    return 0


class Schedule(Callback):
    """Records the engine's epoch length and batch size, for the run's summary."""

    all_processes = True

    def on_fit_start(self, loop: Any) -> None:
        self.steps_per_epoch = loop.config.steps_per_epoch
        self.batch_size = loop.config.batch_size


def _fit_options(args: argparse.Namespace, family: type) -> dict[str, Any]:
    """The keywords of :func:`pyrogen.fit` the options give (the others: its defaults)."""
    epochs = args.epochs
    if epochs is None and args.steps is None:
        epochs = IMAGE_EPOCHS if family.reads_images else None
    options = {
        "steps": args.steps, "epochs": epochs, "batch_size": args.batch_size, "lr": args.lr,
        "checkpoint": args.partial / CHECKPOINT_FILE, "checkpoint_every": args.checkpoint_every,
        "device": args.device, "strategy": args.strategy,
        "devices": args.devices, "num_nodes": args.num_nodes, "precision": args.precision,
        "progress": False if args.quiet else None,  # None: bars on a terminal
        "compile": args.compile or None,
    }  # fmt: skip
    options = {key: value for key, value in options.items() if value is not None}
    return {**options, "seed": args.seed, "resume": args.resuming}


def fit_family(args: argparse.Namespace) -> dict[str, Any]:
    """Read the data, build the family's model from the options and fit it; returns the
    keywords of :func:`pyrogen.diagnostics.write_run` but ``seed``."""
    family, spec = REGISTRY[args.family], spec_of(args.family)
    options = opt.model_options(args, args.model_arguments)
    for name, other in spec.same_as.items():
        if name not in options and other in options:
            options[name] = options[other]
    fit_options = _fit_options(args, family)
    if family.reads_images:
        run, train, setup = _image_data(args, family, spec, options, fit_options)
    else:
        run, train, setup = _table_data(args, spec)
    if args.validation_share is not None:
        with opt.as_option_errors(_FIT_ARGUMENTS):
            held = data.split_train_test(train, seed=args.seed, test_fraction=args.validation_share)
        train, fit_options["validation"] = held.train, held.test
        fit_options["early_stopping"] = args.patience
    options.update(setup.options)
    if "data_shape" in inspect.signature(family).parameters:
        options.setdefault("data_shape", tuple(train.shape[1:]))
    schedule = Schedule()
    fit_options["callbacks"] = [schedule, *setup.callbacks]
    extra = run["extra"]
    with opt.as_option_errors(_FIT_ARGUMENTS):
        if spec.train is not None:
            model, result, run["idata"], more = spec.train(
                args, family, options, train, fit_options
            )
            extra.update(more)
        else:
            pyro.set_rng_seed(args.seed)  # the networks' initial weights are drawn here
            model = spec.build(options) if spec.build else family(**options)
            result = fit(model, train, setup.train_labels, **fit_options)
    if family.reads_images:
        extra["epochs"] = result.steps / schedule.steps_per_epoch
        extra["batch_size"] = min(schedule.batch_size or len(train), len(train))
    extra.update({"seed": args.seed, **setup.extra})
    for callback in setup.callbacks:  # what the workflow's callbacks did
        extra.update(callback.summary)
    return {**run, "model": model, "result": result}


def _table_data(args: argparse.Namespace, spec: FamilySpec) -> tuple[dict, torch.Tensor, Setup]:
    """The rows of --data and, for a family that takes labels (its spec has ``labels``),
    theirs: --labels (a column of a CSV/TSV, a file, an NPZ array) or an NPZ's
    ``y``/``labels`` array; their classes set the model's ``num_classes``. A seeded
    ``--test-share`` of the rows is held out: not trained on, scored in the run's ``test``."""
    labels = labels_source = None
    with opt.as_option_errors():
        if spec.labels is None or args.data is None:
            x, source, columns = data.load_table(args.data, args.columns, args.key)
        else:
            x, labels, labels_source = data.read_labelled_array(
                args.data, labels=args.labels, columns=args.columns, key=args.key
            )
            source = str(args.data)
            columns = None if args.columns is None else args.columns.split(",")
    setup = Setup()
    if labels is not None:
        with opt.as_option_errors():
            classes = data.count_classes([labels], labels_source, args.num_classes)
        described = f"{labels_source}, classes 0..{classes - 1} (-1: unlabelled)"
        setup = Setup({"num_classes": classes}, labels, labels, {"labels": described})
    run = {"data": x, "columns": columns, "extra": {"data": source}, "labels": labels}
    if not args.test_share:
        return run, x, setup
    if len(x) < 2:
        raise ValueError(
            f"{source}: expected at least 2 rows to hold --test-share {args.test_share} of "
            f"them out, got {len(x)} (--test-share 0 trains on every row)"
        )
    split = data.split_train_test(
        x, labels, seed=args.seed, source=source, test_fraction=args.test_share
    )
    run.update(data=split.train, test_data=split.test, labels=split.test_labels)
    run["extra"]["data"] = split.description
    setup.train_labels, setup.test_labels = split.train_labels, split.test_labels
    return run, split.train, setup


def _image_data(
    args: argparse.Namespace, family: type, spec: FamilySpec, options: dict, fit_options: dict
) -> tuple[dict[str, Any], torch.Tensor, Setup]:
    """Load, split, check and shape the images; the test rows binarized once, the training
    rows once or (dynamic) afresh every epoch by ``fit_options["epoch_transform"]``."""
    dataset = args.dataset or (data.IMAGE_DATASETS[0] if args.data_dir is not None else None)
    if spec.before_data is not None:
        options.update(spec.before_data(args, dataset))
    signature = inspect.signature(family).parameters
    declared = signature.get("likelihood")  # a family without one: real values
    likelihood = options.get("likelihood", "gaussian" if declared is None else declared.default)
    split, mode, source = opt.read_images(
        args, dataset=dataset, binarize=args.binarize, likelihood=likelihood, split_seed=args.seed
    )
    if args.limit is not None and args.limit < split.train.shape[0]:
        described = f"; training on its first {args.limit} of {split.train.shape[0]} rows (--limit)"
        labels = None if split.train_labels is None else split.train_labels[: args.limit]
        split = dataclasses.replace(split, train=split.train[: args.limit], train_labels=labels,
                                    description=split.description + described)  # fmt: skip
    setup = spec.configure(args, split) if spec.configure else Setup(test_labels=split.test_labels)
    example_shape = tuple(split.train.shape[1:])
    shape = options.setdefault("data_shape", example_shape)
    if "encoder" in signature:
        with opt.as_option_errors():
            shape = options["data_shape"] = data.image_data_shape(
                example_shape, options.get("encoder", "mlp")
            )
    train = data.as_rows(split.train, shape, source)
    if mode == "dynamic":
        fit_options["epoch_transform"] = data.dynamic_binarization
    how = data.describe_binarization(mode, seed=args.seed, likelihood=likelihood, x=train)
    run = {
        "data": train,
        "columns": None if args.columns is None else args.columns.split(","),
        "test_data": data.as_rows(data.binarize(split.test, mode, seed=args.seed), shape, source),
        "labels": setup.test_labels,
        "image_shape": example_shape if len(example_shape) in (2, 3) else None,
        "iw_samples": getattr(args, family.score_samples_name),
        "extra": {
            "data": split.description,
            "dataset": split.dataset,
            "preprocessing": {"binarize": mode, "description": how},
            "limit": args.limit,
        },
    }
    return run, train if mode == "dynamic" else data.binarize(train, mode), setup
