"""The commands' options and what they read. A family's options come from its constructor
(each argument a ``--kebab-case`` option, typed from its annotation, helped by the class
docstring's ``Args:``); the data options are read with :mod:`pyrogen.data`."""

from __future__ import annotations

import argparse
import contextlib
import inspect
import math
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from pyrogen import data
from pyrogen.diagnostics.report import MODEL_FILE, SUMMARY_FILE, read_run_summary
from pyrogen.infer.distributed import cluster
from pyrogen.models import GenerativeModel, load

#: Constructor arguments the command sets from the data (and labels), never from an option.
FROM_DATA = ("data_shape", "n_features", "num_classes")


class Checked:
    """An option's type: ``convert(text)``, accepted where ``accept(value)``; otherwise the
    usage error says what was ``expected``."""

    def __init__(self, convert: Callable[[str], Any], accept: Callable, expected: str) -> None:
        self.convert, self.accept, self.expected = convert, accept, expected

    def __call__(self, text: str) -> Any:
        try:
            value = self.convert(text)
        except ValueError:
            value = None
        if value is None or not self.accept(value):
            raise argparse.ArgumentTypeError(f"expected {self.expected}, got {text!r}")
        return value


def _widths(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(","))


positive_int = Checked(int, lambda v: v > 0, "a positive integer")
non_negative_int = Checked(int, lambda v: v >= 0, "a non-negative integer")
at_least_two = Checked(int, lambda v: v >= 2, "at least 2 classes")
positive_float = Checked(float, lambda v: math.isfinite(v) and v > 0, "a positive number")
non_negative_float = Checked(float, lambda v: 0 <= v < math.inf, "a non-negative number")
share = Checked(float, lambda v: 0 < v < 1, "a number in (0, 1)")
share_or_none = Checked(float, lambda v: 0 <= v < 1, "a number in [0, 1)")
widths = Checked(_widths, lambda v: all(w > 0 for w in v), "positive integers separated by commas")
numbers = Checked(
    lambda text: tuple(float(part) for part in text.split(",")),
    lambda v: all(math.isfinite(n) and n > 0 for n in v),
    "positive numbers separated by commas",
)


def add_all(group: Any, *rows: tuple[str, str, dict[str, Any]]) -> None:
    """Add options given as rows ``(flags, help, keywords)``, e.g.
    ``("-n --num-rows", "rows to draw", {"type": positive_int})``."""
    for flags, text, keywords in rows:
        group.add_argument(*flags.split(), help=text, **keywords)


def flag(name: str) -> str:
    """``num_classes`` -> ``--num-classes``."""
    return "--" + name.replace("_", "-")


def argument_help(family: type) -> dict[str, str]:
    """Each argument's description in the ``Args:`` section of the docstring of ``family``,
    else of the first base class that describes it (a variant passes its base's arguments on).

    Example:
        >>> class Family:
        ...     '''A family.
        ...
        ...     Args:
        ...         width: how wide,
        ...             in units.
        ...     '''
        >>> argument_help(Family)
        {'width': 'how wide, in units.'}
    """
    found: dict[str, str] = {}
    for klass in reversed(family.__mro__):
        doc = klass.__dict__.get("__doc__") or ""
        section = re.search(r"^Args:\n((?:(?: {4}.*)?\n?)+)", inspect.cleandoc(doc), re.M)
        name = None
        for line in (section.group(1) if section else "").splitlines():
            entry = re.match(r" {4}(\w+)(?: \(.*?\))?: ?(.*)", line)
            if entry:
                name, text = entry.groups()
                found[name] = text
            elif name is not None and line.strip():
                found[name] += " " + line.strip()
    return {key: re.sub(r"``|:\w+:`~?([^`]*)`", r"\1", value) for key, value in found.items()}


def _option_type(parameter: inspect.Parameter) -> Callable[[str], Any] | None:
    """How to read a value of ``parameter`` from its annotation and default; None where
    it takes no value a command line can give (a module, a tensor)."""
    annotation = str(parameter.annotation)
    kinds = {part.strip() for part in annotation.split("|")}
    default = parameter.default
    if "bool" in kinds:
        return bool
    if "int" in kinds:
        return non_negative_int if default == 0 else positive_int
    if "float" in kinds:
        return float
    if "str" in kinds:
        return str
    if "Sequence[int]" in kinds:
        return widths
    if "Sequence[float]" in kinds:
        return numbers
    return None


def add_model_options(parser: Any, family: type, spec: Any) -> list[tuple[str, str]]:
    """Add an option for each constructor argument of ``family`` that a command line can
    give (not those set from the data, nor those ``spec.arguments`` maps to None).

    Returns:
        ``(argument, dest)`` of every option added, for :func:`model_options`.
    """
    group = parser.add_argument_group(f"{family.__name__} model")
    helps = argument_help(family)
    added = []
    for name, parameter in inspect.signature(family).parameters.items():
        given = spec.arguments.get(name, {})
        kind = given and given.get("type") or _option_type(parameter)
        if name in FROM_DATA or given is None or kind is None:
            continue
        default = given.get("default", parameter.default)
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        text = given.get("help") or helps.get(name, name.replace("_", " "))
        if "default" not in text:
            text += f" (default {shown})"
        options: dict[str, Any] = {"dest": f"model_{name}", "help": text.replace("%", "%%")}
        if kind is bool:
            options["action"] = argparse.BooleanOptionalAction
        else:
            options.update(type=kind, choices=given.get("choices", family.choices.get(name)))
            if options["choices"] is None:
                options["metavar"] = name.split("_")[-1].upper()
        if "default" in given:
            options["default"] = default
        group.add_argument(flag(name), **options)
        if name in spec.aliases:  # its own action, so that errors name the spelling used
            alias = {**options, "default": argparse.SUPPRESS, "help": f"same as {flag(name)}"}
            group.add_argument(spec.aliases[name], **alias)
        added.append((name, options["dest"]))
    return added


def model_options(args: argparse.Namespace, added: list[tuple[str, str]]) -> dict[str, Any]:
    """The constructor keywords of the options given (the others keep its defaults)."""
    return {name: getattr(args, d) for name, d in added if getattr(args, d, None) is not None}


def add_scale_out_options(parser: argparse.ArgumentParser, devices_help: str) -> Any:
    """--devices and --num-nodes (of fit, sample and evaluate); returns their group."""
    scale = parser.add_argument_group("scaling out")
    add_all(
        scale,
        ("--devices", devices_help, {"type": positive_int, "default": 1, "metavar": "N"}),
        ("--num-nodes", "machines; run the same command on each with MASTER_ADDR, MASTER_PORT "
         "and NODE_RANK set; only the first process writes or prints results (default 1)",
         {"type": positive_int, "default": 1, "metavar": "M"}),
    )  # fmt: skip
    return scale


def add_run_options(parser: argparse.ArgumentParser, seed: str, **default: int) -> None:
    """RUN_OR_MODEL_FILE, --device and --seed of sample and evaluate."""
    add_all(
        parser,
        ("model_path", "a run folder (its model.pt is used) or a model file",
         {"metavar": "RUN_OR_MODEL_FILE", "type": Path}),
        ("--device", "(default cpu)", {"choices": ("cpu", "cuda"), "default": "cpu"}),
        ("--seed", seed, {"type": int, **default}),
    )  # fmt: skip


#: Arguments of :mod:`pyrogen.data` whose errors are reported as the options that set them.
_OPTION_ARGUMENTS = (
    "data", "data_dir", "dataset", "binarize", "labels", "labelled", "columns", "encoder", "key"
)  # fmt: skip

#: Help of ``--data`` for families that split their data into training and test rows.
SPLIT_DATA_HELP = (
    "an NPY/NPZ (or CSV/TSV) array (N, *shape), split at random (seeded) into "
    f"{1 - data.TEST_FRACTION:.0%}% training and {data.TEST_FRACTION:.0%}% test rows (an NPZ "
    f"may hold labels: {' or '.join(data.LABEL_KEYS)}); one of --data and --data-dir is required"
)
#: Help of ``--data`` for families fitted to a table.
TABLE_DATA_HELP = (
    "data file (CSV/TSV, NPY/NPZ or IDX) of shape (N, D), split at random (seeded) into "
    "training and test rows by --test-share; default the bundled Old Faithful data"
)


@contextlib.contextmanager
def as_option_errors(arguments: tuple[str, ...] = _OPTION_ARGUMENTS) -> Iterator[None]:
    """Report an error about ``arguments`` in the options' words: ``data_dir: ...`` as
    ``--data-dir: ...``, ``dataset='mnist'`` as ``--dataset mnist``."""
    try:
        yield
    except ValueError as error:
        found = re.match(r"([a-z_]+(?:, [a-z_]+)*): ", str(error))
        names = found.group(1).split(", ") if found else []
        if not names or any(name not in arguments for name in names):
            raise
        rest = re.sub(
            r"\b(\w+)='([^']*)'", lambda m: f"{flag(m[1])} {m[2]}", str(error)[found.end(1) :]
        )
        rest = re.sub(r"\bdata_dir\b", "--data-dir", rest)
        raise ValueError(", ".join(map(flag, names)) + rest) from error


def add_image_options(group: Any, use: str, binarize_default: str, *, limit=False) -> None:
    """--data-dir, --dataset and --binarize (and --limit) of the commands that read images."""
    add_all(
        group,
        ("--data-dir", "folder of the MNIST IDX files (pyrogen.data.download_mnist), or with "
         f"--dataset binarized-mnist of {data.BINARIZED_MNIST_FILE}; {use}",
         {"type": Path, "metavar": "DIR"}),
        ("--dataset", "what --data-dir holds (default: the run's, else mnist); binarized-mnist "
         "is the fixed binarization of Larochelle & Murray", {"choices": data.IMAGE_DATASETS}),
        ("--binarize", "dynamic: Bernoulli(intensity) draws, afresh every epoch for training "
         f"images; threshold: 1 above 0.5, else 0; none: as they are. {binarize_default}",
         {"choices": data.BINARIZE_MODES}),
        *[("--limit", "train on the first N training rows only (quick runs); the test set is "
           "whole", {"type": positive_int, "metavar": "N"})][: int(limit)],
    )  # fmt: skip


def add_labels_options(group: Any, use: str, *, num_classes: bool = True) -> None:
    """``--labels FILE|KEY`` (and ``--num-classes C``) for the examples of ``--data``."""
    add_all(
        group,
        ("--labels", "an integer class per --data row: a file (NPY, NPZ, CSV/TSV with a header) "
         f"or an array of the --data NPZ ({' or '.join(data.LABEL_KEYS)} read without it); {use}",
         {"metavar": "FILE|KEY"}),
        *[("--num-classes", "number of classes, labels 0..C-1 (default: the largest label + 1)",
           {"type": at_least_two, "metavar": "C"})][: int(num_classes)],
    )  # fmt: skip


def read_images(args: argparse.Namespace, **options: Any) -> tuple[data.ImageSplit, str, str]:
    """:func:`pyrogen.data.read_images` of ``--data`` or ``--data-dir`` and the options."""
    with as_option_errors():
        return data.read_images(
            args.data, args.data_dir, labels=getattr(args, "labels", None),
            columns=getattr(args, "columns", None), key=getattr(args, "key", None), **options,
        )  # fmt: skip


def images_for(args: argparse.Namespace, model: GenerativeModel, run: dict) -> data.ImageExamples:
    """The test split of ``--data-dir``, or every row of ``--data``, prepared like the run's
    test rows (its data set, --binarize mode and seed by default: the same test images)."""
    seed = args.seed if args.seed is not None else run.get("seed", 0)
    default = run.get("dataset") or data.IMAGE_DATASETS[0]
    dataset = args.dataset or (default if args.data_dir is not None else None)
    requested = args.binarize
    if requested is None and dataset != "binarized-mnist":
        requested = run.get("preprocessing", {}).get("binarize")
    likelihood = model.config.get("likelihood", "gaussian")
    images = read_images(args, dataset=dataset, binarize=requested, likelihood=likelihood)
    return data.prepare_examples(
        *images, data_shape=model.data_shape, seed=seed, likelihood=likelihood
    )


def load_run(args: argparse.Namespace) -> tuple[GenerativeModel, dict[str, Any], torch.device]:
    """The model of RUN_OR_MODEL_FILE (a model file, or a run folder's model.pt), the run's
    summary (empty for a file) and ``--device``, checked."""
    path, summary = args.model_path, args.model_path / SUMMARY_FILE
    if path.is_dir() and not (path / MODEL_FILE).is_file():
        raise FileNotFoundError(f"{path}: expected a run folder holding {MODEL_FILE}, found none")
    run = read_run_summary(summary) if path.is_dir() and summary.is_file() else {}
    model = load(path / MODEL_FILE if path.is_dir() else path)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device: expected an available device, got {args.device!r} (no CUDA)")
    return model, run, torch.device(args.device)


def load_family_run(path: Path, family: str, option: str) -> GenerativeModel:
    """The model of a run folder (its model.pt) or model file at ``path`` that an option
    names (``option``, e.g. ``"--diffusion"``), refused unless it is a ``family`` model."""
    model = load(path / MODEL_FILE if path.is_dir() else path)
    if model.family != family:
        raise ValueError(
            f"{option}: expected a run or model file of a {family} model, got a "
            f"{model.family} model ({str(path)!r})"
        )
    return model


def is_main_process(args: argparse.Namespace) -> bool:
    """Whether this process writes or prints a sharded command's result (first process, node 0)."""
    return cluster().is_main and (args.num_nodes == 1 or os.environ.get("NODE_RANK", "0") == "0")
