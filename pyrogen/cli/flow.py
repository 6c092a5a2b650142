"""``pyrogen fit flow``: a normalizing-flow density on a table (or flattened images)."""

from __future__ import annotations

import argparse
import math

import torch

from pyrogen.cli.common import (
    _FitCommand,
    _Fitted,
    _hardware,
    _load_fit_data,
    _positive_float,
    _positive_int,
    _progress,
)
from pyrogen.infer.engine import fit
from pyrogen.models import FlowDensity
from pyrogen.nn.flows import FLOWS


def _add_flow_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("flow density")
    group.add_argument(
        "--flow", choices=FLOWS, default="nsf", help="flow (default nsf: neural splines)"
    )
    group.add_argument(
        "--transforms", type=_positive_int, default=5, metavar="K", help="flow steps (default 5)"
    )
    group.add_argument(
        "--hidden",
        type=_widths,
        default=(128, 128),
        metavar="W,W",
        help="hidden widths of each step's network (default 128,128)",
    )
    group.add_argument(
        "--batch-size", type=_positive_int, metavar="B", help="rows per step (default 256)"
    )
    group.add_argument(
        "--lr", type=_positive_float, metavar="LR", help="learning rate (default 1e-3)"
    )
    group.add_argument(
        "--validation-share",
        type=_share,
        metavar="F",
        help="hold out this share of the rows (seeded) and stop when their log-likelihood "
        "has not improved for --patience epochs, keeping the best state (default: none)",
    )
    group.add_argument(
        "--patience",
        type=_positive_int,
        default=20,
        metavar="E",
        help="epochs (full-batch: steps) without held-out improvement before stopping "
        "(default 20; only with --validation-share)",
    )
    group.add_argument(
        "--dequantize",
        type=_positive_int,
        metavar="L",
        help="the data are quantized to L levels k / (L - 1) in [0, 1] (256 for 8-bit "
        "images): fit a density to uniformly dequantized values and report the bound",
    )
    group.add_argument(
        "--logit",
        type=float,
        metavar="ALPHA",
        help="model logit(ALPHA + (1 - 2 ALPHA) x) for data in [0, 1] (e.g. 0.05)",
    )


def _fit_flow(args: argparse.Namespace) -> _Fitted:
    x, source, columns = _load_fit_data(args.data, args.columns)
    model = FlowDensity(
        tuple(x.shape[1:]),
        args.flow,
        transforms=args.transforms,
        hidden=args.hidden,
        dequantize=args.dequantize,
        logit=args.logit,
    )
    rows, options = x, {}
    if args.validation_share is not None:
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(args.seed))
        held = max(1, round(args.validation_share * len(x)))
        if held >= len(x):
            raise ValueError(
                f"--validation-share: {args.validation_share} leaves no training rows of {len(x)}"
            )
        rows, options["validation"] = x[order[held:]], x[order[:held]]
        options["early_stopping"] = args.patience
    result = fit(
        model,
        rows,
        **options,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        **_hardware(args),
        progress=_progress(args),
    )
    return _Fitted(model, result, x, columns=columns, extra={"data": source})


def _share(text: str) -> float:
    try:
        share = float(text)
    except ValueError:
        share = math.nan
    if not 0 < share < 1:
        raise argparse.ArgumentTypeError(f"expected a fraction between 0 and 1, got {text!r}")
    return share


def _widths(text: str) -> tuple[int, ...]:
    try:
        widths = tuple(int(part) for part in text.split(","))
    except ValueError:
        widths = ()
    if not widths or any(width < 1 for width in widths):
        raise argparse.ArgumentTypeError(
            f"expected positive integers separated by commas, got {text!r}"
        )
    return widths


#: The flow density's part of ``pyrogen fit`` (its entry in ``pyrogen.cli._FIT_COMMANDS``).
FIT_COMMAND = _FitCommand(
    _add_flow_options,
    _fit_flow,
    "data file (CSV/TSV, NPY/NPZ or IDX) of shape (N, D); default the bundled Old Faithful data",
)
