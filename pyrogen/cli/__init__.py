"""The ``pyrogen`` command: fit a model to data, sample from it, evaluate it; thin on purpose.
Every failure is one ``pyrogen: error:`` line (with its traceback under ``--debug`` or
``PYROGEN_DEBUG=1``) and an exit code: 0 success, 1 training failed numerically, 2 bad usage
or input (an option, argument or file), 3 internal error, 130 interrupted."""

from __future__ import annotations

import argparse
import os
import sys
import traceback
import warnings
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
    """Run ``pyrogen`` on ``argv`` (default ``sys.argv[1:]``); returns the exit code above.

    Example:
        >>> from pyrogen.cli import main
        >>> main(["fit", "banana"])
        2
    """
    import matplotlib

    matplotlib.use("Agg")  # runs write PNG files; never open a window
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv or os.environ.get("PYROGEN_DEBUG", "") not in ("", "0")
    with warnings.catch_warnings():
        if not debug:
            warnings.showwarning = _one_line_warning
        return _run(argv, debug)


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning as one ``pyrogen: warning:`` line (the source line is for developers)."""
    print(" ".join(f"pyrogen: warning: {message}".split()), file=sys.stderr)


def _run(argv: list[str], debug: bool) -> int:
    """Parse and run ``argv``; every failure becomes one line and its exit code."""
    try:
        args = build_parser().parse_args(argv)
        args.argv = argv[argv.index(args.command) + 1 :]  # the command's own arguments
        return args.run(args)
    except UsageError as error:
        (rejecting, message), failure = error.args, error
        rejecting.print_usage(sys.stderr)
        code, line = 2, f"{rejecting.prog}: error: {message}"
    except KeyboardInterrupt as error:  # with a message: where the state was saved
        code, line, failure = 130, f"pyrogen: {str(error) or 'error: interrupted'}", error
    except (ValueError, OSError) as error:
        code, line, failure = 2, f"pyrogen: error: {error}", error
    except FloatingPointError as error:
        code, line, failure = 1, f"pyrogen: error: training failed: {error}", error
    except Exception as error:  # noqa: BLE001 - the one boundary of the command
        failure, name = error, type(error).__name__
        code, line = 3, f"pyrogen: error: internal error ({name}: {error}); rerun with --debug"
    if debug:
        traceback.print_exception(failure)
    print(" ".join(line.split()), file=sys.stderr)  # one line
    return code


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
        epilog="exit codes: 0 success, 1 training failed numerically, 2 bad usage or input, "
        "3 internal error (rerun with --debug or PYROGEN_DEBUG=1), 130 interrupted",
    )
    parser.add_argument("--debug", action="store_true", help="print tracebacks of errors")
    commands = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=Parser
    )
    add_fit_command(commands)
    add_sample_command(commands)
    add_evaluate_command(commands)
    return parser
