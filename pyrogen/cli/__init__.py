"""The ``pyrogen`` command: fit a model to data, sample from it, evaluate it. Thin on
purpose: it parses arguments, calls the public API and prints."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

from pyrogen.cli.fit import add_fit_command
from pyrogen.cli.runs import add_evaluate_command, add_sample_command

__all__ = ["build_parser", "main"]


class UsageError(Exception):
    """A command line argparse rejects (``args``: the parser that rejected it, the message)."""


class Parser(argparse.ArgumentParser):
    """Raises usage errors instead of exiting, so :func:`main` returns their exit code."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(self, message)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``pyrogen`` on ``argv`` (default ``sys.argv[1:]``); returns the exit code: 0 on
    success, 2 for bad input (one ``pyrogen: error:`` line), 1 when training failed
    numerically (``--help`` exits through ``SystemExit(0)``, as argparse does).

    Example:
        >>> from pyrogen.cli import main
        >>> main(["fit", "banana"])
        2
    """
    import matplotlib

    matplotlib.use("Agg")  # runs write PNG files; never open a window
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as error:
        rejecting, message = error.args
        rejecting.print_usage(sys.stderr)
        print(f"{rejecting.prog}: error: {message}", file=sys.stderr)
        return 2
    try:
        return args.run(args)
    except (ValueError, OSError) as error:
        print(f"pyrogen: error: {error}", file=sys.stderr)
        return 2
    except FloatingPointError as error:
        print(f"pyrogen: error: training failed: {error}", file=sys.stderr)
        return 1


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``pyrogen``; ``parse_args`` sets ``run``, the function that
    runs the command.

    Example:
        >>> parser = build_parser()
        >>> parser.parse_args(["fit", "gmm", "--components", "3"]).model_n_components
        3
    """
    parser = Parser(
        prog="pyrogen",
        description="Generative models as Pyro model/guide pairs: fit, sample, evaluate.",
    )
    commands = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=Parser
    )
    add_fit_command(commands)
    add_sample_command(commands)
    add_evaluate_command(commands)
    return parser
