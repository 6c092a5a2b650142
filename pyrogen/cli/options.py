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
from typing import Any

#: Constructor arguments the command sets from the data, never from an option.
FROM_DATA = ("data_shape", "n_features")


def integer(text: str) -> int:
    """An integer option value."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def positive_int(text: str) -> int:
    """A positive integer option value."""
    value = integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    """A non-negative integer option value."""
    value = integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return value


def _number(text: str, accept: Callable[[float], bool], expected: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and accept(value)):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """A positive finite number."""
    return _number(text, lambda v: v > 0, "a positive number")


def non_negative_float(text: str) -> float:
    """A non-negative finite number."""
    return _number(text, lambda v: v >= 0, "a non-negative number")


def share(text: str) -> float:
    """A number in (0, 1)."""
    return _number(text, lambda v: 0 < v < 1, "a number in (0, 1)")


def widths(text: str) -> tuple[int, ...]:
    """Positive integers separated by commas, e.g. ``128,128``."""
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        values = ()
    if not values or any(value < 1 for value in values):
        raise argparse.ArgumentTypeError(
            f"expected positive integers separated by commas, got {text!r}"
        )
    return values


def at_least_two(text: str) -> int:
    """A number of classes."""
    value = integer(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"expected at least 2 classes, got {text!r}")
    return value


def flag(name: str) -> str:
    """``num_classes`` -> ``--num-classes``."""
    return "--" + name.replace("_", "-")


def argument_help(family: type) -> dict[str, str]:
    """Each argument's description in the ``Args:`` section of ``family``'s docstring.

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
    doc = inspect.getdoc(family) or ""
    section = re.search(r"^Args:\n((?:(?: {4}.*)?\n?)+)", doc, re.MULTILINE)
    found: dict[str, str] = {}
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
            options["choices"] = spec.choices.get(name)
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
