"""The ``pyrogen`` command: fit a model to data, sample from it, evaluate it.

Thin on purpose: it parses arguments, calls the public API and prints, so everything it does
can be done from Python too. ``pyrogen fit FAMILY`` has one sub-command per family of
:data:`pyrogen.models.REGISTRY`; a family's own options, how it loads its data and how it
is fitted come from its own module here (``gmm.py``, ``vae.py``, ``flow.py``,
``diffusion.py``; the VAE variants ``cvae.py``, ``ssvae.py`` and ``gmvae.py`` and the
diffusion model reuse ``vae.py``'s data loading), named in ``_FIT_COMMANDS``.
Every family's run folder is written by :func:`pyrogen.diagnostics.write_run`.

Exit codes: 0 success, 2 bad input (usage, files, values; one ``pyrogen: error:`` line and
no traceback), 1 training that failed numerically.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Sequence

from pyrogen.cli import cvae, diffusion, flow, gmm, gmvae, ssvae, vae
from pyrogen.cli.common import (
    _add_common_fit_options,
    _FitCommand,
    _Parser,
    _run_fit,
    _UsageError,
)
from pyrogen.cli.evaluate import _add_evaluate_command
from pyrogen.cli.sample import _add_sample_command
from pyrogen.models import (
    REGISTRY,
    VAE,
    ConditionalVAE,
    DiffusionVAE,
    FlowDensity,
    GaussianMixture,
    GaussianMixtureVAE,
    SemiSupervisedVAE,
)

__all__ = ["build_parser", "main"]

#: Each family's part of ``pyrogen fit``, one module each; families of the registry missing
#: here get only the common options and a clear error.
_FIT_COMMANDS: dict[str, _FitCommand] = {
    GaussianMixture.family: gmm.FIT_COMMAND,
    VAE.family: vae.FIT_COMMAND,
    ConditionalVAE.family: cvae.FIT_COMMAND,
    SemiSupervisedVAE.family: ssvae.FIT_COMMAND,
    GaussianMixtureVAE.family: gmvae.FIT_COMMAND,
    FlowDensity.family: flow.FIT_COMMAND,
    DiffusionVAE.family: diffusion.FIT_COMMAND,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``pyrogen`` command line.

    Args:
        argv: arguments without the program name; default ``sys.argv[1:]``.

    Returns:
        the exit code: 0 on success, 2 for bad input, 1 when training failed numerically.
        (``--help`` exits through ``SystemExit(0)``, as argparse does.)

    Example:
        >>> from pyrogen.cli import main
        >>> main(["fit", "gmm", "--out", "runs/demo", "--quiet"])  # doctest: +SKIP
        0
    """
    import matplotlib

    matplotlib.use("Agg")  # runs write PNG files; never open a window
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except _UsageError as error:
        error.parser.print_usage(sys.stderr)
        print(f"{error.parser.prog}: error: {error.message}", file=sys.stderr)
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
    """The argument parser of ``pyrogen`` (sub-commands fit, sample, evaluate).

    Returns:
        the parser; ``parse_args`` sets ``run``, the function that runs the command.
    """
    parser = _Parser(
        prog="pyrogen",
        description="Generative models as Pyro model/guide pairs: fit, sample, evaluate.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    fit_parser = commands.add_parser(
        "fit",
        help="fit a model family to data and write a run folder",
        description="Fit a model family to data and write a run folder (summary.json, "
        "model.pt, plots; inference_data.nc for the mixture).",
    )
    families = fit_parser.add_subparsers(dest="family", metavar="FAMILY", required=True)
    for name, family in REGISTRY.items():
        command = _FIT_COMMANDS.get(name, _FitCommand())
        doc = (family.__doc__ or name).strip().splitlines()[0]
        family_parser = families.add_parser(name, help=doc, description=doc)
        _add_common_fit_options(family_parser, name, command.data_help)
        command.add_options(family_parser)
        family_parser.set_defaults(run=functools.partial(_run_fit, command=command))

    _add_sample_command(commands)
    _add_evaluate_command(commands)
    return parser
