"""``pyrogen fit gmm``: the Gaussian mixture's options and how the command fits it."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from pyrogen.cli.common import (
    _FitCommand,
    _Fitted,
    _hardware,
    _load_fit_data,
    _non_negative_int,
    _positive_int,
    _progress,
)
from pyrogen.diagnostics.inference_data import to_inference_data
from pyrogen.infer.engine import fit
from pyrogen.models import GaussianMixture
from pyrogen.models.gmm import select_n_components
from pyrogen.models.mixture_em import COVARIANCE_TYPES

#: Largest K tried by ``--components auto``.
MAX_AUTO_COMPONENTS = 8
#: Chains of ``--inference nuts``: two, so that R-hat can compare them.
NUTS_CHAINS = 2


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


def _fit_gmm(args: argparse.Namespace) -> _Fitted:
    """Choose K (BIC over MAP fits) if asked, fit, and get the posterior as InferenceData."""
    x, source, columns = _load_fit_data(args.data, args.columns)
    fit_options = {"steps": args.steps, "progress": _progress(args), **_hardware(args)}
    extra: dict[str, Any] = {"data": source, "inference": args.inference}
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
    return _Fitted(model, result, x, idata=idata, columns=columns, extra=extra)


def _components(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return _positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected a positive integer or 'auto', got {text!r}"
        ) from None


#: The mixture's part of ``pyrogen fit`` (its entry in ``pyrogen.cli._FIT_COMMANDS``).
FIT_COMMAND = _FitCommand(
    _add_gmm_options,
    _fit_gmm,
    "data file (CSV/TSV, NPY/NPZ or IDX) of shape (N, D); default the bundled Old Faithful data",
)
