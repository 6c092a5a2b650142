"""The ``pyrogen`` command: fit a model to data, sample from it, evaluate it.

Thin on purpose: it parses arguments, calls the public API and prints, so everything it does
can be done from Python too. ``pyrogen fit FAMILY`` has one sub-command per family of
:data:`pyrogen.models.REGISTRY`; a family's own options come from its entry in
``_FIT_COMMANDS``.

Exit codes: 0 success, 2 bad input (usage, files, values; one ``pyrogen: error:`` line and
no traceback), 1 training that failed numerically.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import pyro
import torch

from pyrogen.data.datasets import OLD_FAITHFUL_COLUMNS, old_faithful
from pyrogen.data.loaders import load as load_data
from pyrogen.diagnostics.inference_data import to_inference_data
from pyrogen.diagnostics.report import (
    MODEL_FILE,
    SUMMARY_FILE,
    check_run_folder,
    summarize,
    write_run,
)
from pyrogen.infer.engine import FitResult, fit
from pyrogen.io import atomic_write
from pyrogen.models import REGISTRY, GenerativeModel, load
from pyrogen.models.gmm import GaussianMixture, select_n_components
from pyrogen.models.mixture_em import COVARIANCE_TYPES

#: Largest K tried by ``--components auto``.
MAX_AUTO_COMPONENTS = 8
#: Chains of ``--inference nuts``: two, so that R-hat can compare them.
NUTS_CHAINS = 2
SAMPLE_FORMATS = (".csv", ".npy")


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
        "model.pt, inference_data.nc, plots).",
    )
    families = fit_parser.add_subparsers(dest="family", metavar="FAMILY", required=True)
    for name, family in REGISTRY.items():
        command = _FIT_COMMANDS.get(name, _FitCommand())
        doc = (family.__doc__ or name).strip().splitlines()[0]
        family_parser = families.add_parser(name, help=doc, description=doc)
        _add_common_fit_options(family_parser, name)
        command.add_options(family_parser)
        family_parser.set_defaults(run=functools.partial(_run_fit, command=command))

    sample = commands.add_parser(
        "sample",
        help="draw new rows from a fitted model",
        description="Draw new rows from a fitted model; CSV to stdout unless --out is given.",
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
        help="number of rows to draw",
    )
    sample.add_argument(
        "--out",
        type=Path,
        metavar="FILE",
        help=f"write to this file ({' or '.join(SAMPLE_FORMATS)}) instead of stdout",
    )
    sample.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    sample.set_defaults(run=_run_sample)

    evaluate = commands.add_parser(
        "evaluate",
        help="log-likelihood of data under a fitted model",
        description="Print the mean log-likelihood per row (nats) of data under a fitted "
        "model, and BIC/AIC where the model defines them.",
    )
    evaluate.add_argument(
        "model_path",
        metavar="RUN_OR_MODEL_FILE",
        type=Path,
        help="a run folder (its model.pt is used) or a model file",
    )
    evaluate.add_argument(
        "--data",
        type=Path,
        required=True,
        metavar="PATH",
        help="data file (CSV/TSV, NPY/NPZ or IDX)",
    )
    evaluate.add_argument("--columns", metavar="A,B", help="columns of a CSV file to use")
    evaluate.set_defaults(run=_run_evaluate)
    return parser


# --- fit --------------------------------------------------------------------------------
@dataclass
class _Fitted:
    """What a family's fit command hands back to be written and printed."""

    model: GenerativeModel
    result: FitResult
    idata: Any
    extra: dict[str, Any] = field(default_factory=dict)


def _no_options(parser: argparse.ArgumentParser) -> None:
    """Families without command-line options of their own."""


def _not_supported(args: argparse.Namespace, x: torch.Tensor) -> _Fitted:
    raise ValueError(
        f"family: {args.family!r} cannot be fitted from the command line yet; use "
        "pyrogen.fit from Python"
    )


@dataclass(frozen=True)
class _FitCommand:
    """A family's part of ``pyrogen fit``: its options and how to fit it."""

    add_options: Callable[[argparse.ArgumentParser], None] = _no_options
    fit: Callable[[argparse.Namespace, torch.Tensor], _Fitted] = _not_supported


def _add_common_fit_options(parser: argparse.ArgumentParser, family: str) -> None:
    data = parser.add_argument_group("data and output")
    data.add_argument(
        "--data",
        type=Path,
        metavar="PATH",
        help="data file (CSV/TSV, NPY/NPZ or IDX); default the bundled Old Faithful data",
    )
    data.add_argument("--columns", metavar="A,B", help="columns to use (comma-separated)")
    data.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help=f"run folder to create; default runs/{family}-YYYYmmdd-HHMMSS",
    )
    data.add_argument(
        "--quiet", action="store_true", help="no progress bars; print only the run folder"
    )
    training = parser.add_argument_group("training")
    training.add_argument(
        "--steps",
        type=_positive_int,
        metavar="N",
        help="optimisation steps (default: the family's)",
    )
    training.add_argument(
        "--device", choices=("cpu", "cuda"), default="cpu", help="device to train on (default cpu)"
    )
    training.add_argument("--seed", type=int, default=0, help="random seed (default 0)")


def _run_fit(args: argparse.Namespace, command: _FitCommand) -> int:
    out = args.out if args.out is not None else _default_run_folder(args.family)
    check_run_folder(out)  # fail before training, not after
    x, source, columns = _load_fit_data(args.data, args.columns)
    fitted = command.fit(args, x)
    extra = {"data": source, **fitted.extra}
    path = write_run(
        out,
        model=fitted.model,
        result=fitted.result,
        data=x,
        columns=columns,
        idata=fitted.idata,
        extra=extra,
    )
    if args.quiet:
        print(path)
    else:
        summary = json.loads((path / SUMMARY_FILE).read_text())
        print(_describe_fit(summary, tuple(x.shape), path))
    return 0


def _default_run_folder(family: str) -> Path:
    return Path("runs") / f"{family}-{datetime.datetime.now():%Y%m%d-%H%M%S}"


def _load_fit_data(
    path: Path | None, columns: str | None
) -> tuple[torch.Tensor, str, list[str] | None]:
    """Rows to fit, a description of where they came from, and their column names."""
    names = _column_names(columns)
    if path is not None:
        return load_data(path, columns=names), str(path), names
    if names is None:
        return old_faithful(), "Old Faithful (bundled)", list(OLD_FAITHFUL_COLUMNS)
    unknown = [name for name in names if name not in OLD_FAITHFUL_COLUMNS]
    if unknown:
        raise ValueError(
            f"--columns: expected names from the bundled Old Faithful data "
            f"({', '.join(OLD_FAITHFUL_COLUMNS)}), got unknown {unknown}"
        )
    if len(set(names)) != len(names):
        raise ValueError(f"--columns: expected each column once, got {columns!r}")
    index = [OLD_FAITHFUL_COLUMNS.index(name) for name in names]
    return old_faithful()[:, index], "Old Faithful (bundled)", names


def _column_names(text: str | None) -> list[str] | None:
    """``--columns a,b`` as a list of names (the loaders check them against the file)."""
    return None if text is None else [name.strip() for name in text.split(",")]


def _progress(args: argparse.Namespace) -> bool | None:
    """No bars when quiet; otherwise the engine's default (only on a terminal)."""
    return False if args.quiet else None


# --- the Gaussian mixture ---------------------------------------------------------------
def _add_gmm_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Gaussian mixture")
    group.add_argument(
        "--components",
        type=_components,
        default="auto",
        metavar="K|auto",
        help=f"number of components, or 'auto' to choose K in 1..{MAX_AUTO_COMPONENTS} "
        "by BIC (default auto)",
    )
    group.add_argument(
        "--covariance",
        choices=COVARIANCE_TYPES,
        default="full",
        help="covariance type (default full)",
    )
    group.add_argument(
        "--inference",
        choices=("map", "variational", "nuts"),
        default="map",
        help="map (point estimates), variational (mean-field posterior) or nuts (MAP, then "
        f"collapsed NUTS with {NUTS_CHAINS} chains); default map",
    )
    group.add_argument(
        "--num-samples",
        type=_positive_int,
        default=500,
        metavar="N",
        help="posterior draws (per chain for nuts; default 500)",
    )
    group.add_argument(
        "--warmup",
        type=_non_negative_int,
        default=500,
        metavar="N",
        help="NUTS warm-up steps per chain (default 500)",
    )


def _fit_gmm(args: argparse.Namespace, x: torch.Tensor) -> _Fitted:
    """Choose K (BIC over MAP fits) if asked, fit, and get the posterior as InferenceData."""
    fit_options = {"steps": args.steps, "device": args.device, "progress": _progress(args)}
    extra: dict[str, Any] = {"inference": args.inference}
    n_components = args.components
    if n_components == "auto":
        candidates = range(1, min(MAX_AUTO_COMPONENTS, x.shape[0]) + 1)
        best, scores = select_n_components(
            x,
            candidates,
            criterion="bic",
            seed=args.seed,
            covariance=args.covariance,
            inference="map",
            **fit_options,
        )
        n_components = best.n_components
        extra["selection"] = {"criterion": "bic", "scores": {str(k): v for k, v in scores.items()}}
    # The chosen K is fitted again, with the same seed, to get its FitResult (a MAP refit
    # reproduces the selected fit exactly); NUTS starts from the MAP point.
    inference = "map" if args.inference == "nuts" else args.inference
    model = GaussianMixture(n_components, args.covariance, inference)
    result = fit(model, x, seed=args.seed, **fit_options)
    if args.inference == "nuts":
        idata = model.mcmc(
            x,
            num_samples=args.num_samples,
            warmup=args.warmup,
            num_chains=NUTS_CHAINS,
            seed=args.seed,
            progress=not args.quiet and sys.stderr.isatty(),
        )
        extra["mcmc"] = {
            "num_chains": NUTS_CHAINS,
            "num_samples": args.num_samples,
            "warmup": args.warmup,
            "divergences": int(idata.sample_stats["diverging"].sum()),
        }
    else:
        idata = to_inference_data(model, x, num_samples=args.num_samples, seed=args.seed)
    return _Fitted(model, result, idata, extra)


#: Each family's part of ``pyrogen fit``; families of the registry missing here get only the
#: common options and a clear error.
_FIT_COMMANDS: dict[str, _FitCommand] = {
    GaussianMixture.family: _FitCommand(_add_gmm_options, _fit_gmm),
}


# --- sample and evaluate ----------------------------------------------------------------
def _run_sample(args: argparse.Namespace) -> int:
    if args.out is not None and args.out.suffix.lower() not in SAMPLE_FORMATS:
        raise ValueError(
            f"--out: expected a file ending in {' or '.join(SAMPLE_FORMATS)}, got {str(args.out)!r}"
        )
    model, run = _load_model(args.model_path)
    columns = run.get("columns")
    pyro.set_rng_seed(args.seed)
    with torch.no_grad():
        rows = model.sample(args.num_rows).detach().cpu().numpy()
    if args.out is not None and args.out.suffix.lower() == ".npy":
        with atomic_write(args.out) as handle:
            np.save(handle, rows)
        return 0
    table = rows.reshape(rows.shape[0], -1)
    if columns is None or len(columns) != table.shape[1]:
        columns = [f"x{i}" for i in range(table.shape[1])]
    if args.out is None:
        _write_csv(sys.stdout, table, columns)
    else:
        with atomic_write(args.out, "w") as handle:
            _write_csv(handle, table, columns)
    return 0


def _write_csv(handle: Any, table: np.ndarray, columns: list[str]) -> None:
    # A header row, so `pyrogen evaluate --data` and pyrogen.data.load read the file back.
    np.savetxt(handle, table, delimiter=",", header=",".join(columns), comments="", fmt="%.8g")


def _run_evaluate(args: argparse.Namespace) -> int:
    model, run = _load_model(args.model_path)
    if not hasattr(model, "log_prob"):
        raise ValueError(f"{args.model_path}: family {model.family!r} has no exact log-likelihood")
    x = load_data(args.data, columns=_column_names(args.columns))
    summary = summarize(model, x)
    if "inference" in run:
        summary["inference"] = run["inference"]
    lines = [
        f"model           {args.model_path} ({_describe_model(summary)})",
        f"data            {args.data}: {_describe_shape(tuple(x.shape))}",
        *_fit_statistics(summary),
    ]
    print("\n".join(lines))
    return 0


def _load_model(path: Path) -> tuple[GenerativeModel, dict[str, Any]]:
    """A model file, or a run folder's model.pt; with the run's summary (empty for a file)."""
    if not path.is_dir():
        return load(path), {}
    model_file = path / MODEL_FILE
    if not model_file.is_file():
        raise FileNotFoundError(f"{path}: expected a run folder holding {MODEL_FILE}, found none")
    summary_file = path / SUMMARY_FILE
    run = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
    return load(model_file), run


# --- printing ---------------------------------------------------------------------------
def _describe_fit(summary: dict[str, Any], shape: tuple[int, ...], path: Path) -> str:
    """The human summary of a fit: data, model, fit statistics, parameters, run folder."""
    lines = [
        f"data            {summary.get('data', '?')}: {_describe_shape(shape)}"
        + (f" ({', '.join(summary['columns'])})" if summary.get("columns") else ""),
        f"model           {_describe_model(summary)}",
    ]
    selection = summary.get("selection")
    if "n_components" in summary:
        how = f" (chosen by {selection['criterion'].upper()})" if selection else ""
        lines.append(f"components      {summary['n_components']}{how}")
    if selection:
        chosen = str(summary["n_components"])
        for k, score in selection["scores"].items():
            mark = "  <- chosen" if k == chosen else ""
            lines.append(f"  K={k:<3} {selection['criterion'].upper()} {score:12.2f}{mark}")
    lines.extend(_fit_statistics(summary))
    if "mcmc" in summary:
        mcmc = summary["mcmc"]
        lines.append(
            f"NUTS            {mcmc['num_chains']} chains x {mcmc['num_samples']} draws "
            f"({mcmc['warmup']} warm-up), {mcmc['divergences']} divergences"
        )
    if "weights" in summary and "means" in summary:
        lines.append("")
        lines.extend(_parameter_table(summary["weights"], summary["means"], summary.get("columns")))
    lines.append("")
    lines.append(f"run folder      {path}")
    return "\n".join(lines)


def _fit_statistics(summary: dict[str, Any]) -> list[str]:
    """Log-likelihood per row and the information criteria, where the model has them."""
    lines = []
    if "log_likelihood_per_row" in summary:
        lines.append(
            f"log-likelihood  {summary['log_likelihood_per_row']:.4f} nats per row "
            "(exact, at the point estimates, mean over rows)"
        )
    for criterion in ("bic", "aic"):
        if criterion in summary:
            lines.append(f"{criterion.upper():<15} {summary[criterion]:.2f}")
    return lines


def _describe_model(summary: dict[str, Any]) -> str:
    config = summary.get("config", {})
    details = [f"{config['covariance']} covariance"] if "covariance" in config else []
    # A run's own record of its inference wins: a NUTS run's model is configured as MAP.
    inference = summary.get("inference", config.get("inference"))
    if inference is not None:
        details.append(f"{inference} inference")
    return ", ".join([summary["family"], *details])


def _describe_shape(shape: tuple[int, ...]) -> str:
    if len(shape) == 2:
        return f"{shape[0]} rows x {shape[1]} columns"
    return f"{shape[0]} rows of shape {tuple(shape[1:])}"


def _parameter_table(
    weights: list[float], means: list[list[float]], columns: list[str] | None
) -> list[str]:
    """Weights and means, one row per component, as aligned text."""
    n_features = len(means[0])
    names = (
        columns if columns and len(columns) == n_features else [f"x{i}" for i in range(n_features)]
    )
    header = ["component", "weight", *[f"mean {name}" for name in names]]
    rows = [
        [str(k), f"{weight:.4f}", *[f"{value:.4g}" for value in mean]]
        for k, (weight, mean) in enumerate(zip(weights, means, strict=True))
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return [
        "  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True))
        for row in [header, *rows]
    ]


# --- argument parsing helpers -----------------------------------------------------------
class _UsageError(Exception):
    def __init__(self, parser: argparse.ArgumentParser, message: str) -> None:
        super().__init__(message)
        self.parser = parser
        self.message = message


class _Parser(argparse.ArgumentParser):
    """Raises usage errors instead of exiting, so :func:`main` returns their exit code."""

    def error(self, message: str) -> NoReturn:
        raise _UsageError(self, message)


def _positive_int(text: str) -> int:
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _non_negative_int(text: str) -> int:
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return value


def _components(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return _positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected a positive integer or 'auto', got {text!r}"
        ) from None


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
