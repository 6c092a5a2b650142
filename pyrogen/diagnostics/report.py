"""Run folders: everything about one fit, written all at once or not at all.

A run folder holds ``summary.json``, ``model.pt`` (readable by :func:`pyrogen.load`),
``inference_data.nc`` (ArviZ) and plots. It is assembled in a hidden temporary sibling
folder that is renamed into place at the end, so an interrupted or failed run never leaves
a half-written folder, and an existing run is never overwritten.
"""

from __future__ import annotations

import datetime
import errno
import json
import math
import os
import secrets
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import arviz
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from pyrogen import __version__
from pyrogen.data.validation import as_tensor, float_dtype_of
from pyrogen.diagnostics.plots import WEIGHTS, plot_clusters, plot_elbo, plot_weights_posterior
from pyrogen.infer.engine import FitResult
from pyrogen.io import PathLike, atomic_write
from pyrogen.models.base import GenerativeModel

SUMMARY_FILE = "summary.json"
MODEL_FILE = "model.pt"
INFERENCE_DATA_FILE = "inference_data.nc"
ELBO_PLOT = "elbo.png"
CLUSTERS_PLOT = "clusters.png"
WEIGHTS_PLOT = "weights_posterior.png"

_FIGURE_SIZE = (6.0, 4.5)
_DPI = 120


def summarize(model: GenerativeModel, data: Any) -> dict[str, Any]:
    """Fit statistics of ``model`` on ``data``, as plain JSON-ready values.

    Args:
        model: a fitted model.
        data: rows of shape (N, ...).

    Returns:
        ``family``, ``config``, ``n_rows``, ``n_features`` (for (N, D) data), and where the
        model provides them: ``n_components``; ``log_likelihood_per_row`` (mean over rows
        of the exact ``model.log_prob``, in nats, at the point estimates); ``bic`` and
        ``aic``; ``weights`` (K,) and ``means`` (K, D).

    Example:
        >>> import pyrogen
        >>> from pyrogen.diagnostics import summarize
        >>> x = pyrogen.data.old_faithful()
        >>> gmm = pyrogen.GaussianMixture(2).fit(x, steps=20, progress=False)
        >>> round(summarize(gmm, x)["log_likelihood_per_row"], 1)
        -4.2
    """
    if not isinstance(model, GenerativeModel):
        raise TypeError(f"model: expected a pyrogen GenerativeModel, got {type(model).__name__}")
    x = as_tensor(data, name="data", ndim=None, dtype=float_dtype_of(data))
    summary: dict[str, Any] = {
        "family": model.family,
        "config": model.config,
        "n_rows": int(x.shape[0]),
    }
    if x.dim() == 2:
        summary["n_features"] = int(x.shape[1])
    if hasattr(model, "n_components"):
        summary["n_components"] = int(model.n_components)
    with torch.no_grad():
        if hasattr(model, "log_prob"):
            summary["log_likelihood_per_row"] = float(model.log_prob(x).mean())
        for criterion in ("bic", "aic"):
            if hasattr(model, criterion):
                summary[criterion] = float(getattr(model, criterion)(x))
        if hasattr(model, "mixture_parameters"):
            params = model.mixture_parameters()
            summary["weights"] = params.weights.detach().cpu().tolist()
            summary["means"] = params.locs.detach().cpu().tolist()
    return _jsonable(summary)


def write_run(
    out_dir: PathLike,
    *,
    model: GenerativeModel,
    result: FitResult | None,
    data: Any,
    columns: Sequence[str] | None = None,
    idata: arviz.InferenceData | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write a run folder for a fitted model.

    Files: ``summary.json`` (see below), ``model.pt``, and when they apply ``elbo.png``
    (``result`` has losses), ``clusters.png`` (a mixture on (N, D >= 2) data),
    ``weights_posterior.png`` and ``inference_data.nc`` (``idata`` given; the plot when its
    posterior has ``weights``).

    ``summary.json`` holds :func:`summarize`'s statistics plus ``columns``, ``training``
    (steps, time_s, device, final_loss, best_loss, best_step, stopped_early and ``loss``,
    naming the bound: the negative ELBO of ``model.loss``, nats per example), ``files``,
    ``pyrogen_version``, ``created_at`` and the keys of ``extra``.

    Args:
        out_dir: the run folder to create; it must not exist or be empty. Its parent folders
            are created.
        model: the fitted model.
        result: what :func:`pyrogen.fit` returned (``None`` if the model was fitted
            otherwise).
        data: the rows of shape (N, ...) it was fitted on.
        columns: names of the D columns of ``data``.
        idata: ``InferenceData`` of the posterior (e.g. from :func:`to_inference_data`).
        extra: more JSON-serialisable entries for ``summary.json`` (their keys must not
            clash with the standard ones).

    Returns:
        the run folder's path.

    Raises:
        ValueError: ``out_dir`` exists and is not empty (a run is never overwritten), or
            ``columns`` / ``extra`` do not fit.

    Example:
        >>> import pyrogen, tempfile
        >>> from pyrogen.diagnostics import to_inference_data, write_run
        >>> x = pyrogen.data.old_faithful()
        >>> gmm = pyrogen.GaussianMixture(2)
        >>> result = pyrogen.fit(gmm, x, steps=20, progress=False)
        >>> idata = to_inference_data(result, x, num_samples=10)
        >>> run = write_run(f"{tempfile.mkdtemp()}/run", model=gmm, result=result, data=x,
        ...                 columns=["eruptions", "waiting"], idata=idata)
        >>> sorted(p.name for p in run.iterdir())  # doctest: +NORMALIZE_WHITESPACE
        ['clusters.png', 'elbo.png', 'inference_data.nc', 'model.pt', 'summary.json',
         'weights_posterior.png']
    """
    out = check_run_folder(out_dir)
    if not isinstance(model, GenerativeModel):
        raise TypeError(f"model: expected a pyrogen GenerativeModel, got {type(model).__name__}")
    if result is not None and not isinstance(result, FitResult):
        raise TypeError(f"result: expected a FitResult or None, got {type(result).__name__}")
    x = as_tensor(data, name="data", ndim=None, dtype=float_dtype_of(data))
    columns = _check_columns(columns, x)
    summary = summarize(model, x)
    summary["columns"] = columns
    if result is not None:
        summary["training"] = _training(result)
    summary.update(_check_extra(extra, summary))

    writers: dict[str, Callable[[Path], None]] = {}
    if result is not None and result.losses:
        writers[ELBO_PLOT] = _figure_writer(lambda ax: plot_elbo(result, ax))
    if hasattr(model, "mixture_parameters") and x.dim() == 2 and x.shape[1] >= 2:
        writers[CLUSTERS_PLOT] = _figure_writer(
            lambda ax: plot_clusters(model, x, ax, feature_names=columns)
        )
    if idata is not None:
        if WEIGHTS in getattr(idata, "posterior", {}):
            writers[WEIGHTS_PLOT] = _figure_writer(lambda ax: plot_weights_posterior(idata, ax))
        writers[INFERENCE_DATA_FILE] = lambda path: idata.to_netcdf(str(path))
    writers[MODEL_FILE] = model.save
    summary["files"] = sorted([*writers, SUMMARY_FILE])
    summary["pyrogen_version"] = __version__
    summary["created_at"] = datetime.datetime.now(datetime.timezone.utc).isoformat(
        timespec="seconds"
    )
    writers[SUMMARY_FILE] = lambda path: _write_json(path, summary)

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = _staging_folder(out)
    try:
        for name, write in writers.items():
            write(staging / name)
        _move_into_place(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def check_run_folder(out_dir: PathLike) -> Path:
    """Check that a run can be written to ``out_dir`` (it is new, or an empty folder).

    :func:`write_run` checks this itself; call it first to fail before a long fit.

    Args:
        out_dir: the run folder to be.

    Returns:
        ``out_dir`` as a Path.

    Raises:
        ValueError: ``out_dir`` is a file or a folder that is not empty.
    """
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        what = "a file" if not out.is_dir() else "a folder that is not empty"
        raise ValueError(
            f"out_dir: expected a new or empty folder, got {what} at {str(out)!r} "
            "(runs are never overwritten; choose another folder)"
        )
    return out


def _staging_folder(out: Path) -> Path:
    # A fresh hidden sibling on the same file system, so the final rename is atomic. mkdir
    # (rather than tempfile.mkdtemp's 0700) gives it the permissions a normal folder gets.
    staging = out.parent / f".{out.name}.{secrets.token_hex(4)}.tmp"
    staging.mkdir()
    return staging


def _move_into_place(staging: Path, out: Path) -> None:
    try:
        # On POSIX this replaces an empty folder and fails on a non-empty one, so a run that
        # appeared in the meantime is never overwritten.
        os.rename(staging, out)
    except OSError as error:
        if error.errno in (errno.ENOTEMPTY, errno.EEXIST):
            raise ValueError(
                f"out_dir: expected a new or empty folder, got {str(out)!r} filled by another "
                "process while this run was being written"
            ) from error
        raise


def _figure_writer(draw: Callable[[Axes], Axes]) -> Callable[[Path], None]:
    """A writer that draws on a fresh figure and saves it as PNG.

    ``Figure`` is used directly (not pyplot), so no backend or display is needed and no
    figure is left open.
    """

    def write(path: Path) -> None:
        figure = Figure(figsize=_FIGURE_SIZE, layout="constrained")
        draw(figure.subplots())
        with atomic_write(path) as handle:
            figure.savefig(handle, format="png", dpi=_DPI)

    return write


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    text = json.dumps(_jsonable(payload), indent=2, allow_nan=False)
    with atomic_write(path, "w") as handle:
        handle.write(text + "\n")


def _training(result: FitResult) -> dict[str, Any]:
    return {
        "steps": result.steps,
        "time_s": result.time_s,
        "device": result.device,
        "final_loss": result.final_loss,
        "best_loss": result.best_loss,
        "best_step": result.best_step,
        "stopped_early": result.stopped_early,
        "loss": f"negative ELBO ({type(result.model.loss).__name__}), nats per example",
    }


def _check_columns(columns: Sequence[str] | None, x: torch.Tensor) -> list[str] | None:
    if columns is None:
        return None
    if isinstance(columns, str) or not all(isinstance(c, str) for c in columns):
        raise TypeError(f"columns: expected a sequence of str, got {columns!r}")
    if x.dim() != 2 or len(columns) != x.shape[1]:
        width = x.shape[1] if x.dim() == 2 else "(N, D) data"
        raise ValueError(f"columns: expected {width} names, got {len(columns)}")
    return list(columns)


def _check_extra(extra: Mapping[str, Any] | None, summary: dict[str, Any]) -> dict[str, Any]:
    if extra is None:
        return {}
    if not isinstance(extra, Mapping):
        raise TypeError(f"extra: expected a dict or None, got {type(extra).__name__}")
    reserved = {*summary, "training", "files", "pyrogen_version", "created_at"}
    clashes = sorted(set(extra) & reserved)
    if clashes:
        raise ValueError(f"extra: expected keys other than the summary's own, got {clashes}")
    try:
        json.dumps(_jsonable(dict(extra)), allow_nan=False)
    except (TypeError, ValueError) as error:
        raise ValueError(f"extra: expected JSON-serialisable values, got {error}") from error
    return dict(extra)


def _jsonable(value: Any) -> Any:
    """Plain JSON values: tensors and numpy values become lists and numbers, and NaN/inf
    become null (strict JSON has no such numbers)."""
    if isinstance(value, Mapping):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    if isinstance(value, torch.Tensor):
        return _jsonable(value.detach().cpu().tolist())
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
