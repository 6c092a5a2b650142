"""What every ``pyrogen`` sub-command shares: the fit plumbing that runs a family's
:class:`_FitCommand` and writes its run folder, model loading, the printed summaries and the
argument-parsing helpers. Kept apart so that a family's module holds only what is its own.
"""

from __future__ import annotations

import argparse
import datetime
import inspect
import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import torch

from pyrogen.data.datasets import OLD_FAITHFUL_COLUMNS, old_faithful
from pyrogen.data.loaders import load as load_data
from pyrogen.diagnostics.report import (
    DEFAULT_IW_SAMPLES,
    DIFFUSION_TERMS,
    MODEL_FILE,
    SUMMARY_FILE,
    check_run_folder,
    write_run,
)
from pyrogen.infer.distributed import (
    STRATEGIES,
    check_scale_out,
    cluster,
    join,
    spawn,
)
from pyrogen.infer.engine import FitResult
from pyrogen.infer.precision import PRECISIONS
from pyrogen.models import GenerativeModel, load


# --- fit --------------------------------------------------------------------------------
@dataclass
class _Fitted:
    """What a family's fit command hands back to be written (by ``write_run``) and printed."""

    model: GenerativeModel
    result: FitResult
    data: torch.Tensor  # the training rows (N, *data_shape)
    idata: Any = None
    columns: list[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    test_data: torch.Tensor | None = None  # held-out rows (M, *data_shape), scored in the run
    test_labels: torch.Tensor | None = None  # (M,): colour, condition, score (write_run)
    image_shape: tuple[int, ...] | None = None  # how to draw one example
    iw_samples: int = DEFAULT_IW_SAMPLES


def _no_options(parser: argparse.ArgumentParser) -> None:
    """Families without command-line options of their own."""


def _not_supported(args: argparse.Namespace) -> _Fitted:
    raise ValueError(
        f"family: {args.family!r} cannot be fitted from the command line yet; use "
        "pyrogen.fit from Python"
    )


@dataclass(frozen=True)
class _FitCommand:
    """A family's part of ``pyrogen fit``: its options, how it loads data and fits, and the
    help of the common ``--data`` option (what data it takes)."""

    add_options: Callable[[argparse.ArgumentParser], None] = _no_options
    fit: Callable[[argparse.Namespace], _Fitted] = _not_supported
    data_help: str = "data file (CSV/TSV, NPY/NPZ or IDX)"


def _add_common_fit_options(parser: argparse.ArgumentParser, family: str, data_help: str) -> None:
    data = parser.add_argument_group("data and output")
    data.add_argument("--data", type=Path, metavar="PATH", help=data_help)
    data.add_argument(
        "--columns", metavar="A,B", help="columns of a CSV/TSV --data file to use (comma-separated)"
    )
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
    scale = _add_scale_out_options(
        parser, "training processes on this machine, one per GPU with --device cuda (default 1)"
    )
    scale.add_argument(
        "--strategy",
        choices=STRATEGIES,
        default="auto",
        help="ddp: data-parallel over the processes; auto: ddp when there are several "
        "(default auto)",
    )
    scale.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="32",
        help="bf16-mixed: the networks' linear and convolution layers in bfloat16, every "
        "log-density in float32 (default 32)",
    )


def _add_scale_out_options(parser: argparse.ArgumentParser, devices_help: str) -> Any:
    """--devices and --num-nodes (of fit, sample and evaluate); returns their group."""
    scale = parser.add_argument_group("scaling out")
    scale.add_argument("--devices", type=_positive_int, default=1, metavar="N", help=devices_help)
    scale.add_argument(
        "--num-nodes",
        type=_positive_int,
        default=1,
        metavar="M",
        help="machines; run the same command on each with MASTER_ADDR, MASTER_PORT and "
        "NODE_RANK set; only the first process writes or prints results (default 1)",
    )
    return scale


def _hardware(args: argparse.Namespace) -> dict[str, Any]:
    """The keywords of :func:`pyrogen.fit` that say where and how precisely to train."""
    return {
        "device": args.device,
        "strategy": args.strategy,
        "devices": args.devices,
        "num_nodes": args.num_nodes,
        "precision": args.precision,
    }


def _run_fit(args: argparse.Namespace, command: _FitCommand) -> int:
    out = args.out if args.out is not None else _default_run_folder(args.family)
    check_run_folder(out)  # fail before training, not after
    strategy, devices, num_nodes = check_scale_out(args.strategy, args.devices, args.num_nodes)
    if strategy == "ddp" and devices * num_nodes > 1:
        _device(args.device)
        # Every process runs the whole command (data loading included) and its fit calls
        # train together; the first process writes the run folder.
        args = argparse.Namespace(**{**vars(args), "out": out})
        args.run = None  # the command is found again by family name (partials do not pickle)
        # A torchrun-launched process joins its group; a lone one spawns the processes.
        if join(devices * num_nodes, args.device, "--devices, --num-nodes").world_size == 1:
            spawn(
                _fit_process, (args,), devices=devices, num_nodes=num_nodes, device_type=args.device
            )
        else:
            _fit_process(args)
        return 0
    return _write_fitted(args, command, out)


def _fit_process(args: argparse.Namespace) -> dict[str, Any]:
    """One training process of ``pyrogen fit --devices N``."""
    from pyrogen.cli import _FIT_COMMANDS

    command = _FIT_COMMANDS.get(args.family, _FitCommand())
    if cluster().is_main:
        _write_fitted(args, command, args.out)
    else:
        command.fit(args)
    return {}


def _write_fitted(args: argparse.Namespace, command: _FitCommand, out: Path) -> int:
    fitted = command.fit(args)
    if fitted.test_data is not None and not args.quiet and sys.stderr.isatty():
        # Scoring many test rows with K importance samples each takes a while: say so.
        print(
            f"scoring {fitted.test_data.shape[0]} test rows (ELBO, and the IWAE bound with "
            f"K = {fitted.iw_samples}) and writing the run folder...",
            file=sys.stderr,
        )
    path = write_run(
        out,
        model=fitted.model,
        result=fitted.result,
        data=fitted.data,
        columns=fitted.columns,
        idata=fitted.idata,
        extra={"seed": args.seed, **fitted.extra},
        test_data=fitted.test_data,
        labels=fitted.test_labels,
        image_shape=fitted.image_shape,
        iw_samples=fitted.iw_samples,
        seed=args.seed,
    )
    if args.quiet:
        print(path)
    else:
        summary = json.loads((path / SUMMARY_FILE).read_text())
        print(_describe_fit(summary, tuple(fitted.data.shape), path))
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


# --- models -----------------------------------------------------------------------------
def _device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device: expected an available device, got {name!r} (no CUDA)")
    return torch.device(name)


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
def _processes(training: dict[str, Any]) -> str:
    """ ", in N processes" for a data-parallel run; nothing for one process."""
    count = training.get("processes", 1)
    return f", in {count} data-parallel processes" if count > 1 else ""


def _describe_fit(summary: dict[str, Any], shape: tuple[int, ...], path: Path) -> str:
    """The human summary of a fit: data, model, fit statistics, parameters, run folder."""
    test = summary.get("test")
    if test is None:
        data = f"{summary.get('data', '?')}: {_describe_shape(shape)}"
        if summary.get("columns"):
            data += f" ({', '.join(summary['columns'])})"
        lines = [f"data            {data}"]
    else:
        lines = [
            f"data            {summary.get('data', '?')}",
            f"shapes          train {shape[0]} rows, test {test['n_rows']} rows of shape "
            f"{tuple(shape[1:])}"
            + (
                f"; latent z ({summary['config']['latent_dim']},)"
                if "latent_dim" in summary.get("config", {})
                else ""
            ),
        ]
    preprocessing = summary.get("preprocessing")
    if preprocessing:
        lines.append(
            f"preprocessing   --binarize {preprocessing['binarize']}: "
            f"{preprocessing['description']}"
        )
    if summary.get("labels"):
        lines.append(f"labels          {summary['labels']}")
    lines.append(f"model           {_describe_model(summary)}")
    training = summary.get("training")
    if training and "epochs" in summary:
        lines.append(
            f"training        {summary['epochs']:g} epoch(s): {training['steps']} steps of up to "
            f"{summary['batch_size']} rows, {training['time_s']:.1f} s on {training['device']}"
            + _processes(training)
        )
    selection = summary.get("selection")
    if "n_components" in summary:
        how = f" (chosen by {selection['criterion'].upper()})" if selection else ""
        if summary.get("component_init"):
            how += f"; {summary['component_init']}"
        lines.append(f"components      {summary['n_components']}{how}")
    if selection:
        chosen = str(summary["n_components"])
        for k, score_ in selection["scores"].items():
            mark = "  <- chosen" if k == chosen else ""
            lines.append(f"  K={k:<3} {selection['criterion'].upper()} {score_:12.2f}{mark}")
    lines.extend(_fit_statistics(summary))
    if test is not None:
        lines.extend(_score_lines(test, prefix="test "))
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


def _score_lines(stats: dict[str, Any], prefix: str) -> list[str]:
    """The numbers of :func:`~pyrogen.diagnostics.score`, each with the bound it is and the
    quantity it bounds (log p(x), or a conditional one such as log p(x | y))."""
    quantity = stats.get("quantity", "log p(x)")
    lines = []
    if "elbo_per_example" in stats:
        lines.append(
            _label(f"{prefix}ELBO")
            + f"{stats['elbo_per_example']:.4f} nats per example (a lower bound on {quantity})"
        )
    if "diffusion_per_example" in stats:  # the ELBO's terms stand in for an IWAE bound
        names = {"reconstruction": "recon.", "prior": "prior KL", "diffusion": "diff. KLs"}
        for term in DIFFUSION_TERMS:
            lines.append(
                _label(f"{prefix}{names[term]}")
                + f"{stats[f'{term}_per_example']:.4f} nats per example"
            )
        lines.append(
            _label(f"{prefix}bits/dim")
            + f"{stats['bits_per_dim']:.4f} (from the ELBO; {stats['step_samples']} step "
            "draw(s) per example)"
        )
        return lines
    bound = f"IWAE bound, K = {stats['iw_samples']}" if "iw_samples" in stats else "exact"
    name, value = f"{prefix}{quantity}", f"{stats['log_likelihood_per_example']:.4f}"
    if len(name) < 16:
        lines.append(_label(name) + f"{value} nats per example ({bound})")
    else:  # a long conditional quantity goes after the number
        lines.append(
            _label(f"{prefix}log-lik.") + f"{value} nats per example: {quantity} ({bound})"
        )
    if "bits_per_dim" in stats:
        lines.append(
            _label(f"{prefix}bits/dim") + f"{stats['bits_per_dim']:.4f} (from the {bound})"
        )
    rows = stats.get("labelled_rows")
    if "accuracy" in stats:
        lines.append(
            _label(f"{prefix}accuracy")
            + f"{stats['accuracy']:.4f} of {rows} labelled rows (predict: the most probable "
            "class under the classifier q(y | x))"
        )
    if "clustering_accuracy" in stats:
        lines.append(
            _label(f"{prefix}clustering")
            + f"{stats['clustering_accuracy']:.4f} accuracy on {rows} labelled rows (each "
            "component matched to one label, the best one-to-one matching)"
        )
    return lines


def _label(text: str) -> str:
    """A line's name, padded to the column of values (16 characters)."""
    return f"{text:<15} "


def _describe_model(summary: dict[str, Any]) -> str:
    config = summary.get("config", {})
    details = [f"{config['covariance']} covariance"] if "covariance" in config else []
    if config.get("num_classes"):
        details.append(f"{config['num_classes']} classes")
    if "n_components" in config and "latent_dim" in config:  # a mixture prior (gmvae)
        details.append(f"{config['n_components']} components")
    observed = config.get("observed")
    if observed is not None:
        details.append(
            f"given the {observed} half" if isinstance(observed, str) else "given a fixed mask"
        )
    for key in ("encoder", "likelihood", "objective"):
        if key in config:
            details.append(f"{config[key]} {key}")
    if "classifier_weight" in config:
        details.append(f"classifier weight {config['classifier_weight']:g}")
        details.append(f"labelled share {config['labelled_share']:g}")
    if config.get("beta", 1) != 1:
        details.append(f"beta {config['beta']:g}")
    if config.get("num_particles", 1) > 1:
        details.append(f"{config['num_particles']} particles")
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


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _default_of(function: Callable[..., Any], name: str) -> Any:
    """The default of argument ``name`` of ``function``: option defaults follow the API's."""
    return inspect.signature(function).parameters[name].default


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
