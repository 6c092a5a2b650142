"""Command-line options from a family's constructor: each argument of
``inspect.signature(Family)`` becomes ``--kebab-case`` option, typed from its annotation and
default, with the help of the class docstring's ``Args:`` section. A family's
:class:`~pyrogen.cli.families.FamilySpec` adds what a signature cannot say (choices, an
alias, arguments the command sets itself)."""

from __future__ import annotations

import argparse
import inspect
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


def _finite(accept: Callable[[float], bool]) -> Callable[[float], bool]:
    return lambda value: math.isfinite(value) and accept(value)


def _widths(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(","))


positive_int = Checked(int, lambda v: v > 0, "a positive integer")
non_negative_int = Checked(int, lambda v: v >= 0, "a non-negative integer")
at_least_two = Checked(int, lambda v: v >= 2, "at least 2 classes")
positive_float = Checked(float, _finite(lambda v: v > 0), "a positive number")
non_negative_float = Checked(float, _finite(lambda v: v >= 0), "a non-negative number")
share = Checked(float, lambda v: 0 < v < 1, "a number in (0, 1)")
fraction = Checked(float, lambda v: 0 < v < 1, "a fraction between 0 and 1")
widths = Checked(_widths, lambda v: all(w > 0 for w in v), "positive integers separated by commas")


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
    return None


def add_model_options(
    parser: argparse.ArgumentParser, family: type, spec: Any
) -> list[tuple[str, str]]:
    """Add an option for each constructor argument of ``family`` that a command line can
    give (not those set from the data, nor those ``spec.hidden`` names).

    Returns:
        ``(argument, dest)`` of every option added, for :func:`model_options`.
    """
    group = parser.add_argument_group(f"{family.__name__} model")
    helps = argument_help(family)
    added = []
    for name, parameter in inspect.signature(family).parameters.items():
        kind = spec.types.get(name) or _option_type(parameter)
        if name in FROM_DATA or name in spec.hidden or kind is None:
            continue
        default = spec.defaults.get(name, parameter.default)
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        text = spec.helps.get(name) or helps.get(name, name.replace("_", " "))
        if "default" not in text:
            text += f" (default {shown})"
        options: dict[str, Any] = {"dest": f"model_{name}", "help": text.replace("%", "%%")}
        if kind is bool:
            options["action"] = argparse.BooleanOptionalAction
        else:
            options["type"] = kind
            options["choices"] = spec.choices.get(name, family.choices.get(name))
            if options["choices"] is None:
                options["metavar"] = name.split("_")[-1].upper()
        if name in spec.defaults:
            options["default"] = default
        group.add_argument(flag(name), **options)
        if name in spec.aliases:  # its own action, so that errors name the spelling used
            alias = {**options, "default": argparse.SUPPRESS, "help": f"same as {flag(name)}"}
            group.add_argument(spec.aliases[name], **alias)
        added.append((name, options["dest"]))
    return added


def model_options(args: argparse.Namespace, added: list[tuple[str, str]]) -> dict[str, Any]:
    """The constructor keywords of the options given (the others keep its defaults)."""
    values = {name: getattr(args, dest, None) for name, dest in added}
    return {name: value for name, value in values.items() if value is not None}


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
