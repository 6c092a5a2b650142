"""Run folders: everything about one fit, written all at once or not at all.

A run folder holds ``summary.json``, ``model.pt`` (readable by :func:`pyrogen.load`),
``inference_data.nc`` (ArviZ) and plots. It is assembled in a hidden temporary sibling
folder that is renamed into place at the end, so an interrupted or failed run never leaves
a half-written folder, and an existing run is never overwritten.

Which plots a run gets is decided by one table, ``_PLOTS``: each entry names a file, says
when it applies (from what the model can do and what data the run has) and how to draw it.
A family adds its plots by adding entries there, not by writing another report function.
Held-out statistics (:func:`score`) say which bound each number is.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import functools
import inspect
import json
import math
import os
import secrets
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import arviz
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from pyrogen import __version__
from pyrogen.data.validation import as_tensor, check_int, float_dtype_of
from pyrogen.diagnostics.plots import (
    WEIGHTS,
    plot_clusters,
    plot_elbo,
    plot_image_grid,
    plot_latent,
    plot_reconstructions,
    plot_weights_posterior,
)
from pyrogen.diagnostics.plots import image_shape as drawable_shape
from pyrogen.infer.engine import FitResult
from pyrogen.io import PathLike, atomic_write
from pyrogen.models.base import GenerativeModel

SUMMARY_FILE = "summary.json"
MODEL_FILE = "model.pt"
INFERENCE_DATA_FILE = "inference_data.nc"
ELBO_PLOT = "elbo.png"
CLUSTERS_PLOT = "clusters.png"
WEIGHTS_PLOT = "weights_posterior.png"
SAMPLES_PLOT = "samples.png"
RECONSTRUCTIONS_PLOT = "reconstructions.png"
LATENT_PLOT = "latent.png"
#: Importance samples K of the log-likelihood bound in :func:`score` and run reports.
DEFAULT_IW_SAMPLES = 100
#: Images in ``samples.png`` (an 8 x 8 grid).
SAMPLE_GRID = 64
#: Examples shown in ``reconstructions.png``.
RECONSTRUCTED = 8

_FIGURE_SIZE = (6.0, 4.5)
_SQUARE_FIGURE = (6.0, 6.0)
_STRIP_FIGURE = (8.0, 2.4)
_DPI = 120


def summarize(model: GenerativeModel, data: Any) -> dict[str, Any]:
    """Fit statistics of ``model`` on ``data``, as plain JSON-ready values.

    Args:
        model: a fitted model.
        data: rows of shape (N, ...).

    Returns:
        ``family``, ``config``, ``n_rows``, ``data_shape`` (of one row), ``n_features`` (for
        (N, D) data), and where the model provides them: ``n_components``;
        ``log_likelihood_per_row`` (mean over rows of the exact ``model.log_prob``, in nats,
        at the point estimates); ``bic`` and ``aic``; ``weights`` (K,) and ``means`` (K, D).
        Models without an exact log-likelihood (the VAE) get no statistics here: see
        :func:`score`, which says which bound each number is.

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
        "data_shape": list(x.shape[1:]),
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


def score(
    model: GenerativeModel,
    data: Any,
    *,
    iw_samples: int = DEFAULT_IW_SAMPLES,
    seed: int | None = 0,
) -> dict[str, Any]:
    """Held-out statistics of ``model`` on ``data``, in nats per example, naming each bound.

    For a model with an exact ``log_prob`` (the mixture), the mean exact log-likelihood. For
    a latent-variable model with ``elbo`` and ``log_likelihood`` (the VAE): the mean ELBO
    (a lower bound on log p(x)), the mean importance-weighted bound L_K with K =
    ``iw_samples`` (below log p(x) in expectation, and at or above the ELBO in expectation),
    and bits per dimension ``-L_K / (D ln 2)`` with D the values per example.

    Args:
        model: a fitted model.
        data: examples of shape ``(N, *data_shape)``.
        iw_samples: K, the importance samples per example of the log-likelihood bound.
        seed: seeds the Monte Carlo draws (the global random state is left as it was), so
            the same model, data and seed give the same numbers; None draws from the global
            random state.

    Returns:
        ``n_rows``; ``log_likelihood_per_example``; for latent-variable models also
        ``elbo_per_example``, ``iw_samples`` and ``bits_per_dim``; ``standard_errors`` (of
        each mean over the N examples: std / sqrt(N), which includes the spread between
        examples as well as Monte Carlo noise); ``bounds`` (what each number is); ``units``.

    Raises:
        TypeError: ``model`` has neither ``log_prob`` nor ``elbo`` and ``log_likelihood``.
        ValueError: ``iw_samples`` is not a positive integer, or the data do not fit.

    Example:
        >>> import torch, pyrogen
        >>> from pyrogen.diagnostics import score
        >>> stats = score(pyrogen.VAE((16,), latent_dim=2), torch.rand(20, 16), iw_samples=10)
        >>> stats["bounds"]["log_likelihood_per_example"]
        'IWAE bound L_K with K = 10 importance samples: below log p(x) in expectation'
    """
    if not isinstance(model, GenerativeModel):
        raise TypeError(f"model: expected a pyrogen GenerativeModel, got {type(model).__name__}")
    check_int("iw_samples", iw_samples)
    x = as_tensor(data, name="data", ndim=None, dtype=float_dtype_of(data))
    stats: dict[str, Any] = {"n_rows": int(x.shape[0])}
    per_example: dict[str, torch.Tensor] = {}
    with _seeded(seed), torch.no_grad():
        if hasattr(model, "log_prob"):
            per_example["log_likelihood_per_example"] = model.log_prob(x)
            bounds = {"log_likelihood_per_example": "exact log p(x), at the point estimates"}
        elif hasattr(model, "elbo") and hasattr(model, "log_likelihood"):
            per_example["elbo_per_example"] = model.elbo(x)
            per_example["log_likelihood_per_example"] = model.log_likelihood(
                x, num_samples=iw_samples
            )
            stats["iw_samples"] = iw_samples
            bounds = {
                "elbo_per_example": "ELBO E_q[log p(x | z)] - KL(q(z | x) || p(z)) at beta = 1 "
                "(analytic KL): a lower bound on log p(x)",
                "log_likelihood_per_example": f"IWAE bound L_K with K = {iw_samples} "
                "importance samples: below log p(x) in expectation",
                "bits_per_dim": "-log_likelihood_per_example / (D ln 2), D = "
                f"{math.prod(x.shape[1:])} values per example: an upper bound in expectation",
            }
        else:
            raise TypeError(
                f"model: expected log_prob, or elbo and log_likelihood, on {type(model).__name__}"
            )
    for name, values in per_example.items():
        stats[name] = float(values.double().mean())
    if "bits_per_dim" in bounds:
        dims = math.prod(x.shape[1:])
        stats["bits_per_dim"] = -stats["log_likelihood_per_example"] / (dims * math.log(2))
    count = x.shape[0]
    stats["standard_errors"] = {
        name: float(values.double().std() / math.sqrt(count)) if count > 1 else None
        for name, values in per_example.items()
    }
    stats["bounds"] = bounds
    stats["units"] = "nats per example (bits_per_dim: bits per value)"
    return _jsonable(stats)


@contextlib.contextmanager
def _seeded(seed: int | None) -> Iterator[None]:
    """Seed torch's generators inside the block and restore them after (no seed: no-op)."""
    if seed is None:
        yield
        return
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def write_run(
    out_dir: PathLike,
    *,
    model: GenerativeModel,
    result: FitResult | None,
    data: Any,
    columns: Sequence[str] | None = None,
    idata: arviz.InferenceData | None = None,
    extra: Mapping[str, Any] | None = None,
    test_data: Any = None,
    labels: Any = None,
    image_shape: Sequence[int] | None = None,
    iw_samples: int = DEFAULT_IW_SAMPLES,
    seed: int = 0,
) -> Path:
    """Write a run folder for a fitted model.

    Files: ``summary.json`` (see below), ``model.pt``, and when they apply ``elbo.png``
    (``result`` has losses), ``clusters.png`` (a mixture on (N, D >= 2) data),
    ``weights_posterior.png`` and ``inference_data.nc`` (``idata`` given; the plot when its
    posterior has ``weights``); for models of images: ``samples.png`` (an 8 x 8 grid of the
    decoder means of ``model.sample(64, mean=True)``), ``reconstructions.png`` (held-out
    examples above their reconstructions) and, for models with an encoder, ``latent.png``
    (posterior means of the held-out examples, coloured by ``labels``; see
    :func:`~pyrogen.diagnostics.plot_latent`). "Held-out" is ``test_data`` when given, else
    ``data``.

    ``summary.json`` holds :func:`summarize`'s statistics (of ``data``) plus ``columns``,
    ``image_shape`` (for image models), ``training`` (steps, time_s, device, final_loss,
    best_loss, best_step, stopped_early and ``loss``, naming the bound: the negative ELBO of
    ``model.loss``, nats per example), ``test`` (:func:`score` of ``test_data``, when
    given), ``files``, ``pyrogen_version``, ``created_at`` and the keys of ``extra``.

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
        test_data: held-out examples ``(M, *data_shape)`` to score and to draw.
        labels: class labels (M,) of the held-out examples, to colour ``latent.png``.
        image_shape: how to draw one example, ``(H, W)`` or ``(3, H, W)``; default from
            ``model.data_shape`` where it is an image (see
            :func:`~pyrogen.diagnostics.plots.image_shape`); image plots need one.
        iw_samples: K of the log-likelihood bound in ``test`` (see :func:`score`).
        seed: seeds the Monte Carlo draws of ``test`` and ``samples.png``.

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
    held_out = None
    if test_data is not None:
        dtype = float_dtype_of(test_data)
        held_out = as_tensor(test_data, name="test_data", ndim=None, dtype=dtype)
    run = _Run(
        model=model,
        result=result,
        x=x,
        held_out=x if held_out is None else held_out,
        labels=_check_labels(labels, x if held_out is None else held_out),
        columns=columns,
        idata=idata,
        image_shape=_drawable_shape(image_shape, model),
        seed=seed,
    )
    summary = summarize(model, x)
    summary["columns"] = columns
    if run.image_shape is not None:
        summary["image_shape"] = list(run.image_shape)
    if result is not None:
        summary["training"] = _training(result)
    if held_out is not None:
        summary["test"] = score(model, held_out, iw_samples=iw_samples, seed=seed)
    summary.update(_check_extra(extra, summary))

    writers: dict[str, Callable[[Path], None]] = {
        plot.name: figure_writer(functools.partial(plot.draw, run), plot.figsize)
        for plot in _PLOTS
        if plot.applies(run)
    }
    if idata is not None:
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


# --- the plots of a run -----------------------------------------------------------------
@dataclass(frozen=True)
class _Run:
    """What the plots of a run are drawn from."""

    model: GenerativeModel
    result: FitResult | None
    x: torch.Tensor  # the training data (N, ...)
    held_out: torch.Tensor  # test data, or the training data when there is none
    labels: np.ndarray | None  # (M,) labels of held_out
    columns: list[str] | None
    idata: arviz.InferenceData | None
    image_shape: tuple[int, ...] | None  # how to draw one example; None: not images
    seed: int


@dataclass(frozen=True)
class _Plot:
    """One PNG file of a run: its name, when it applies, and how to draw it on an Axes."""

    name: str
    applies: Callable[[_Run], bool]
    draw: Callable[[_Run, Axes], Axes]
    figsize: tuple[float, float] = _FIGURE_SIZE


def _draw_samples(run: _Run, ax: Axes) -> Axes:
    with _seeded(run.seed), torch.no_grad():
        images = run.model.sample(SAMPLE_GRID, mean=True).cpu()
    return plot_image_grid(
        images, ax, shape=run.image_shape, title=f"{SAMPLE_GRID} samples (decoder means)"
    )


# Plotting functions are looked up when a plot is drawn (not bound here), so they can be
# replaced, e.g. by tests.
_PLOTS: tuple[_Plot, ...] = (
    _Plot(
        ELBO_PLOT,
        applies=lambda run: run.result is not None and bool(run.result.losses),
        draw=lambda run, ax: plot_elbo(run.result, ax),
    ),
    _Plot(
        CLUSTERS_PLOT,
        applies=lambda run: (
            hasattr(run.model, "mixture_parameters") and run.x.dim() == 2 and run.x.shape[1] >= 2
        ),
        draw=lambda run, ax: plot_clusters(run.model, run.x, ax, feature_names=run.columns),
    ),
    _Plot(
        WEIGHTS_PLOT,
        applies=lambda run: (
            run.idata is not None and WEIGHTS in getattr(run.idata, "posterior", {})
        ),
        draw=lambda run, ax: plot_weights_posterior(run.idata, ax),
    ),
    _Plot(
        SAMPLES_PLOT,
        applies=lambda run: (
            run.image_shape is not None and takes_argument(run.model.sample, "mean")
        ),
        draw=lambda run, ax: _draw_samples(run, ax),
        figsize=_SQUARE_FIGURE,
    ),
    _Plot(
        RECONSTRUCTIONS_PLOT,
        applies=lambda run: run.image_shape is not None and hasattr(run.model, "reconstruct"),
        draw=lambda run, ax: plot_reconstructions(
            run.model, run.held_out, ax, n=RECONSTRUCTED, shape=run.image_shape
        ),
        figsize=_STRIP_FIGURE,
    ),
    _Plot(
        LATENT_PLOT,
        applies=lambda run: hasattr(run.model, "encode"),
        draw=lambda run, ax: plot_latent(run.model, run.held_out, run.labels, ax),
    ),
)


def takes_argument(method: Callable[..., Any], argument: str) -> bool:
    """Whether ``method`` accepts a keyword ``argument`` (e.g. ``mean`` of ``sample``)."""
    try:
        return argument in inspect.signature(method).parameters
    except (TypeError, ValueError):
        return False


def _drawable_shape(shape: Sequence[int] | None, model: GenerativeModel) -> tuple[int, ...] | None:
    """How to draw one example: ``shape`` checked, else guessed from ``model.data_shape``."""
    data_shape = getattr(model, "data_shape", None)
    if shape is None:
        return None if data_shape is None else drawable_shape(data_shape)
    drawable = drawable_shape(shape)
    if drawable is None:
        raise ValueError(
            f"image_shape: expected (H, W), (1, H, W) or (3, H, W), got {tuple(shape)}"
        )
    if data_shape is not None and math.prod(drawable) != math.prod(data_shape):
        raise ValueError(
            f"image_shape: expected {math.prod(data_shape)} values like the model's "
            f"data_shape {tuple(data_shape)}, got {tuple(shape)}"
        )
    return drawable


def _check_labels(labels: Any, x: torch.Tensor) -> np.ndarray | None:
    if labels is None:
        return None
    values = np.asarray(labels.detach().cpu() if isinstance(labels, torch.Tensor) else labels)
    if values.ndim != 1 or values.shape[0] != x.shape[0]:
        raise ValueError(
            f"labels: expected shape ({x.shape[0]},), one per held-out example, got {values.shape}"
        )
    return values


def figure_writer(
    draw: Callable[[Axes], Axes], figsize: tuple[float, float] = _FIGURE_SIZE
) -> Callable[[Path], None]:
    """A writer ``write(path)`` that draws on a fresh figure and saves it as PNG atomically.

    ``Figure`` is used directly (not pyplot), so no backend or display is needed and no
    figure is left open.

    Args:
        draw: draws on the Axes it is given (e.g. ``lambda ax: plot_elbo(result, ax)``).
        figsize: figure size in inches (width, height).

    Returns:
        the writer.

    Example:
        >>> import tempfile, torch
        >>> from pyrogen.diagnostics import plot_image_grid
        >>> write = figure_writer(lambda ax: plot_image_grid(torch.rand(16, 64), ax))
        >>> write(f"{tempfile.mkdtemp()}/grid.png")
    """

    def write(path: PathLike) -> None:
        figure = Figure(figsize=figsize, layout="constrained")
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
    reserved = {
        *summary,
        "training",
        "test",
        "image_shape",
        "files",
        "pyrogen_version",
        "created_at",
    }
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
