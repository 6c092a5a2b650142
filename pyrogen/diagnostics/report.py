"""Run folders: everything about one fit, written all at once or not at all.

A run folder holds ``summary.json``, ``model.pt`` (readable by :func:`pyrogen.load`),
``inference_data.nc`` (ArviZ) and plots. It is assembled in a hidden temporary sibling
folder that is renamed into place at the end, so an interrupted or failed run never leaves
a half-written folder, and an existing run is never overwritten.

Which plots a run gets is decided by one table, ``_PLOTS``: each entry names a file, says
when it applies (from what the model can do and what data the run has) and how to draw it.
A family adds its plots by adding entries there, not by writing another report function.
Held-out statistics (:func:`score`) say which bound each number is, and of which quantity:
log p(x), or for a model conditioned on labels or on given values log p(x | y) or
log p(x_missing | x_given, y).
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
from pyrogen.diagnostics.metrics import clustering_accuracy
from pyrogen.diagnostics.plots import (
    MAX_GRID_ROWS,
    WEIGHTS,
    grid_sample_options,
    plot_class_samples,
    plot_clusters,
    plot_completions,
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
from pyrogen.models.conditional_vae import ConditionalVAE, observed_mask
from pyrogen.models.diffusion import DiffusionVAE
from pyrogen.models.flow import FlowDensity

SUMMARY_FILE = "summary.json"
MODEL_FILE = "model.pt"
INFERENCE_DATA_FILE = "inference_data.nc"
ELBO_PLOT = "elbo.png"
CLUSTERS_PLOT = "clusters.png"
WEIGHTS_PLOT = "weights_posterior.png"
SAMPLES_PLOT = "samples.png"
RECONSTRUCTIONS_PLOT = "reconstructions.png"
LATENT_PLOT = "latent.png"
CLASS_SAMPLES_PLOT = "class_samples.png"
COMPONENT_SAMPLES_PLOT = "component_samples.png"
COMPLETIONS_PLOT = "completions.png"
#: Importance samples K of the log-likelihood bound in :func:`score` and run reports.
DEFAULT_IW_SAMPLES = 100
#: The terms of a diffusion model's ELBO, as ``score`` reports them.
DIFFUSION_TERMS = ("reconstruction", "prior", "diffusion")
#: Images in ``samples.png`` (an 8 x 8 grid).
SAMPLE_GRID = 64
#: Examples shown in ``reconstructions.png`` and ``completions.png``, and samples per row
#: of ``class_samples.png`` and ``component_samples.png``.
RECONSTRUCTED = 8

_FIGURE_SIZE = (6.0, 4.5)
_SQUARE_FIGURE = (6.0, 6.0)
_STRIP_FIGURE = (8.0, 2.4)
_THREE_ROW_FIGURE = (8.0, 3.4)
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
        if model.exact_likelihood and not conditions_on_labels(model):
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
    labels: Any = None,
    iw_samples: int = DEFAULT_IW_SAMPLES,
    seed: int | None = 0,
) -> dict[str, Any]:
    """Held-out statistics of ``model`` on ``data``, in nats per example, naming each bound.

    For a model with an exact ``log_prob`` (the mixture), the mean exact log-likelihood. For
    a latent-variable model with ``elbo`` and ``log_likelihood`` (the VAEs): the mean ELBO
    (a lower bound), the mean importance-weighted bound L_K with K = ``iw_samples`` (below
    the log-likelihood in expectation, and at or above the ELBO in expectation), and bits
    per dimension ``-L_K / (D ln 2)`` with D the values each example is scored on.

    What is bounded (``quantity``) is log p(x), except for a
    :class:`~pyrogen.ConditionalVAE`: log p(x | y) with ``num_classes`` (``labels`` are its
    y), log p(x_missing | x_given) with ``observed`` (only the missing values are scored,
    and D counts them), or log p(x_missing | x_given, y) with both. A
    :class:`~pyrogen.SemiSupervisedVAE` is scored on log p(x), its label summed out.

    Args:
        model: a fitted model.
        data: examples of shape ``(N, *data_shape)``.
        labels: class labels (N,) of ``data``, or None. The condition y of a model
            conditioned on labels (required there); for a classifier (a model with
            ``predict`` and ``num_classes``, e.g. the semi-supervised VAE) the ``accuracy``
            of ``predict``, and for a clustering model (``predict`` and ``n_components``)
            the ``clustering_accuracy`` (best one-to-one matching of components to labels).
            Rows labelled -1 (unlabelled) are left out of both.
        iw_samples: K, the importance samples per example of the log-likelihood bound.
        seed: seeds the Monte Carlo draws (the global random state is left as it was), so
            the same model, data and seed give the same numbers; None draws from the global
            random state.

    Returns:
        ``n_rows``; ``quantity``; ``log_likelihood_per_example``; for latent-variable models
        also ``elbo_per_example``, ``iw_samples`` and ``bits_per_dim``; with labels, where
        the model predicts them, ``accuracy`` or ``clustering_accuracy`` and
        ``labelled_rows``; ``standard_errors`` (of each mean over the N examples:
        std / sqrt(N), which includes the spread between examples as well as Monte Carlo
        noise); ``bounds`` (what each number is); ``units``.

    Raises:
        TypeError: ``model`` has neither ``log_prob`` nor ``elbo`` and ``log_likelihood``.
        ValueError: ``iw_samples`` is not a positive integer, the data do not fit, or
            ``labels`` are missing for a model conditioned on them or do not fit.

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
    conditioned = conditions_on_labels(model)
    used = labels is not None and (conditioned or hasattr(model, "predict"))
    y = _label_tensor(labels, x.shape[0]) if used else None
    if conditioned and y is None:
        raise ValueError(
            f"labels: expected the labels ({x.shape[0]},) of the data for a {model.family} "
            f"conditioned on {model.num_classes} classes (its bounds are of "
            f"{likelihood_target(model)}), got None"
        )
    condition = {"y": y} if conditioned else {}
    quantity = likelihood_target(model)
    stats: dict[str, Any] = {"n_rows": int(x.shape[0]), "quantity": quantity}
    per_example: dict[str, torch.Tensor] = {}
    with _seeded(seed), torch.no_grad():
        if model.exact_likelihood:
            per_example["log_likelihood_per_example"] = model.log_prob(x, **condition)
            bounds = {
                "log_likelihood_per_example": f"exact {quantity}"
                + (", at the point estimates" if hasattr(model, "n_components") else "")
            }
        elif hasattr(model, "elbo_terms"):  # diffusion: the ELBO and its three terms
            terms = model.elbo_terms(x, **condition, num_samples=iw_samples)
            per_example["elbo_per_example"] = terms["elbo"]
            per_example["log_likelihood_per_example"] = terms["elbo"]
            for term in DIFFUSION_TERMS:
                per_example[f"{term}_per_example"] = terms[term]
            stats["step_samples"] = iw_samples
            bounds = {
                "elbo_per_example": f"ELBO = reconstruction - prior - diffusion: a lower bound "
                f"on {quantity}, its diffusion term estimated from {iw_samples} uniformly "
                "drawn step(s) per example (unbiased)",
                "log_likelihood_per_example": "the ELBO (no tighter bound is computed)",
                "reconstruction_per_example": "E_q log p(x | z_0)",
                "prior_per_example": "KL(q(z_T | x) || N(0, I)), closed form",
                "diffusion_per_example": "sum over the T steps of E_q KL(q(z_{t-1} | z_t, x) "
                "|| p(z_{t-1} | z_t))",
                "bits_per_dim": f"-ELBO / (D ln 2), D = {_scored_values(model, x)} values per "
                "example: an upper bound in expectation",
            }
        elif hasattr(model, "elbo") and hasattr(model, "log_likelihood"):
            per_example["elbo_per_example"] = model.elbo(x, **condition)
            per_example["log_likelihood_per_example"] = model.log_likelihood(
                x, **condition, num_samples=iw_samples
            )
            stats["iw_samples"] = iw_samples
            dims = _scored_values(model, x)
            bounds = {
                "elbo_per_example": f"{_elbo_description(model)}: a lower bound on {quantity}",
                "log_likelihood_per_example": f"IWAE bound L_K with K = {iw_samples} "
                f"importance samples: below {quantity} in expectation",
                "bits_per_dim": f"-log_likelihood_per_example / (D ln 2), D = {dims} values "
                "per example"
                + (" (the missing ones)" if given_mask(model) is not None else "")
                + ": an upper bound in expectation",
            }
        else:
            raise TypeError(
                f"model: expected log_prob, or elbo and log_likelihood, on {type(model).__name__}"
            )
        if y is not None and hasattr(model, "predict"):
            bounds.update(_prediction_scores(model, x, y, stats))
    for name, values in per_example.items():
        stats[name] = float(values.double().mean())
    if "bits_per_dim" in bounds:
        stats["bits_per_dim"] = -stats["log_likelihood_per_example"] / (
            _scored_values(model, x) * math.log(2)
        )
    count = x.shape[0]
    stats["standard_errors"] = {
        name: float(values.double().std() / math.sqrt(count)) if count > 1 else None
        for name, values in per_example.items()
    }
    stats["bounds"] = bounds
    stats["units"] = "nats per example (bits_per_dim: bits per value)"
    return _jsonable(stats)


def _prediction_scores(
    model: GenerativeModel, x: torch.Tensor, y: torch.Tensor, stats: dict[str, Any]
) -> dict[str, str]:
    """Accuracy of a classifier's or clustering model's ``predict`` against labels y (>= 0)."""
    known = y >= 0
    if not bool(known.any()):
        return {}
    predicted = model.predict(x[known.to(x.device)]).cpu()
    truth = y[known]
    stats["labelled_rows"] = int(known.sum())
    if hasattr(model, "num_classes"):
        stats["accuracy"] = float((predicted == truth).double().mean())
        return {
            "accuracy": "fraction of the labelled rows whose predict(x) (the most probable "
            "class under the model's classifier) is their label"
        }
    if hasattr(model, "n_components"):
        stats["clustering_accuracy"] = clustering_accuracy(truth, predicted)
        return {
            "clustering_accuracy": "fraction of the labelled rows whose predict(x) (the most "
            f"probable of the {model.n_components} components) is matched to their label by "
            "the best one-to-one matching of components to labels (Hungarian algorithm)"
        }
    return {}


def _elbo_description(model: GenerativeModel) -> str:
    if isinstance(model, FlowDensity):
        return (
            "ELBO of uniform dequantization E_q[log p(y)] - D log L, y uniform in the bin of "
            "each value"
        )
    if hasattr(model, "num_classes") and hasattr(model, "predict"):  # y a latent variable
        return (
            "ELBO U(x) = E_q(y | x)[L(x, y) - log q(y | x)] at beta = 1, the label summed out "
            "exactly (analytic KL of z)"
        )
    if isinstance(model, ConditionalVAE):
        return (
            "ELBO E_q[log p(x | z, c)] - KL(q(z | x, c) || p(z | c)) at beta = 1 (analytic KL), "
            "c the condition (the one-hot label and/or the given values)"
        )
    if hasattr(model, "n_components"):
        return (
            "ELBO E_q[log p(x | z)] - KL(q(z | x) || p(z)) at beta = 1 (Monte Carlo KL against "
            "the mixture prior, its component summed out)"
        )
    if getattr(model, "posterior", "gaussian") != "gaussian":
        return (
            "ELBO E_q[log p(x | z) + log p(z) - log q(z | x)] at beta = 1, q(z | x) a "
            f"{model.posterior} flow (Monte Carlo KL)"
        )
    return "ELBO E_q[log p(x | z)] - KL(q(z | x) || p(z)) at beta = 1 (analytic KL)"


def _label_tensor(labels: Any, rows: int) -> torch.Tensor:
    if torch.is_tensor(labels):
        labels = labels.detach().cpu()
    values = torch.as_tensor(np.asarray(labels))
    if values.dim() != 1 or values.shape[0] != rows:
        raise ValueError(
            f"labels: expected shape ({rows},), one per example, got {tuple(values.shape)}"
        )
    if values.is_floating_point():
        if not torch.equal(values, values.round()):
            raise ValueError("labels: expected integer class labels, got non-integer values")
    return values.long()


def conditions_on_labels(model: GenerativeModel) -> bool:
    """Whether ``model``'s likelihood is conditional on class labels y, so that scoring or
    drawing from it needs them: a :class:`~pyrogen.ConditionalVAE`,
    :class:`~pyrogen.FlowDensity` or :class:`~pyrogen.DiffusionVAE` with ``num_classes``."""
    conditional = (ConditionalVAE, FlowDensity, DiffusionVAE)
    return isinstance(model, conditional) and model.num_classes is not None


def given_mask(model: GenerativeModel) -> torch.Tensor | None:
    """The values of each example a model is given rather than generating (True = given),
    shape ``data_shape``: a :class:`~pyrogen.ConditionalVAE` with ``observed``; else None."""
    if not isinstance(model, ConditionalVAE) or model.observed is None:
        return None
    return observed_mask(model.config["observed"], tuple(model.data_shape))


def likelihood_target(model: GenerativeModel) -> str:
    """What the model's log-likelihood (and its bounds) is of, e.g. ``"log p(x | y)"``."""
    given = given_mask(model) is not None
    labels = conditions_on_labels(model)
    if given:
        return "log p(x_missing | x_given" + (", y)" if labels else ")")
    return "log p(x | y)" if labels else "log p(x)"


def _scored_values(model: GenerativeModel, x: torch.Tensor) -> int:
    """D: the values per example that the likelihood scores (the missing ones, if given)."""
    given = given_mask(model)
    return math.prod(x.shape[1:]) if given is None else int((~given).sum())


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
    decoder means of ``model.sample(64, mean=True)``; not for a model that needs given
    values), ``reconstructions.png`` (held-out examples above their reconstructions; not
    for a model with given values), for models with an encoder ``latent.png`` (posterior
    means of the held-out examples, coloured by ``labels``; see
    :func:`~pyrogen.diagnostics.plot_latent`), and for the VAE variants:
    ``class_samples.png`` (models with classes: samples of each class, one row per class;
    with given values, completions of the given part of held-out examples under each
    label), ``component_samples.png`` (models with mixture components: samples of each
    component, one row per component) and ``completions.png`` (models with given values:
    held-out examples, their given part, and their completion). "Held-out" is
    ``test_data`` when given, else ``data``.

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
        labels: class labels (M,) of the held-out examples: they colour ``latent.png``, are
            the condition y of a model conditioned on labels (required for one), and score
            ``predict`` of a classifier or clustering model (see :func:`score`).
        image_shape: how to draw one example, ``(H, W)`` or ``(3, H, W)``; default from
            ``model.data_shape`` where it is an image (see
            :func:`~pyrogen.diagnostics.plots.image_shape`); image plots need one.
        iw_samples: K of the log-likelihood bound in ``test`` (see :func:`score`, which
            also gets ``labels``).
        seed: seeds the Monte Carlo draws of ``test`` and ``samples.png``.

    Returns:
        the run folder's path.

    Raises:
        ValueError: ``out_dir`` exists and is not empty (a run is never overwritten),
            ``columns`` / ``extra`` do not fit, or ``labels`` are missing for a model
            conditioned on them.

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
    if conditions_on_labels(model) and run.labels is None:
        raise ValueError(
            f"labels: expected the labels of the held-out examples for a {model.family} "
            f"conditioned on {model.num_classes} classes, got None"
        )
    summary = summarize(model, x)
    summary["columns"] = columns
    if run.image_shape is not None:
        summary["image_shape"] = list(run.image_shape)
    if result is not None:
        summary["training"] = _training(result)
    if held_out is not None:
        summary["test"] = score(
            model, held_out, labels=run.labels, iw_samples=iw_samples, seed=seed
        )
    summary.update(_check_extra(extra, summary))

    writers: dict[str, Callable[[Path], None]] = {
        plot.name: figure_writer(
            functools.partial(plot.draw, run),
            plot.figsize(run) if callable(plot.figsize) else plot.figsize,
        )
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
    # Inches (width, height), or a function of the run giving them.
    figsize: tuple[float, float] | Callable[[_Run], tuple[float, float]] = _FIGURE_SIZE


def _draw_samples(run: _Run, ax: Axes) -> Axes:
    options, drawn = grid_sample_options(run.model)
    with _seeded(run.seed), torch.no_grad():
        images = run.model.sample(SAMPLE_GRID, **options).cpu()
    return plot_image_grid(
        images, ax, shape=run.image_shape, title=f"{SAMPLE_GRID} samples ({drawn})"
    )


def _draw_class_samples(run: _Run, ax: Axes) -> Axes:
    """One row per class (or component); with given values, those of the first held-out
    examples, completed under each label."""
    observed = run.held_out[:RECONSTRUCTED] if given_mask(run.model) is not None else None
    with _seeded(run.seed):
        return plot_class_samples(
            run.model, ax, per_row=RECONSTRUCTED, observed=observed, shape=run.image_shape
        )


def _grid_figsize(run: _Run) -> tuple[float, float]:
    """A figure for a grid of RECONSTRUCTED columns and one row per class or component."""
    count = getattr(run.model, "num_classes", None) or getattr(run.model, "n_components", 1)
    rows = min(int(count), MAX_GRID_ROWS)
    height, width = run.image_shape[-2:] if run.image_shape else (1, 1)
    return (6.0, min(10.0, max(2.0, 0.8 + 5.2 * rows * height / (RECONSTRUCTED * width))))


def _condition(run: _Run) -> torch.Tensor | None:
    """The labels of the held-out examples where the model is conditioned on them."""
    if not conditions_on_labels(run.model) or run.labels is None:
        return None
    return _label_tensor(run.labels, run.held_out.shape[0])


def _is_image_model(run: _Run) -> bool:
    return run.image_shape is not None


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
            _is_image_model(run)
            and (takes_argument(run.model.sample, "mean") or hasattr(run.model, "elbo_terms"))
            and given_mask(run.model) is None
        ),
        draw=lambda run, ax: _draw_samples(run, ax),
        figsize=_SQUARE_FIGURE,
    ),
    _Plot(
        CLASS_SAMPLES_PLOT,
        applies=lambda run: (
            _is_image_model(run) and getattr(run.model, "num_classes", None) is not None
        ),
        draw=lambda run, ax: _draw_class_samples(run, ax),
        figsize=_grid_figsize,
    ),
    _Plot(
        COMPONENT_SAMPLES_PLOT,
        applies=lambda run: (
            _is_image_model(run)
            and hasattr(run.model, "n_components")
            and takes_argument(run.model.sample, "y")
        ),
        draw=lambda run, ax: _draw_class_samples(run, ax),
        figsize=_grid_figsize,
    ),
    _Plot(
        COMPLETIONS_PLOT,
        applies=lambda run: _is_image_model(run) and given_mask(run.model) is not None,
        draw=lambda run, ax: plot_completions(
            run.model,
            run.held_out,
            ax,
            given=given_mask(run.model),
            y=_condition(run),
            n=RECONSTRUCTED,
            shape=run.image_shape,
        ),
        figsize=_THREE_ROW_FIGURE,
    ),
    _Plot(
        # Not for given values: the decoder's outputs there are never trained (the
        # likelihood leaves them out), so completions.png shows such models instead.
        RECONSTRUCTIONS_PLOT,
        applies=lambda run: (
            _is_image_model(run)
            and hasattr(run.model, "reconstruct")
            and given_mask(run.model) is None
        ),
        draw=lambda run, ax: plot_reconstructions(
            run.model, run.held_out, ax, n=RECONSTRUCTED, shape=run.image_shape, y=_condition(run)
        ),
        figsize=_STRIP_FIGURE,
    ),
    _Plot(
        LATENT_PLOT,
        applies=lambda run: hasattr(run.model, "encode"),
        draw=lambda run, ax: plot_latent(
            run.model, run.held_out, run.labels, ax, y=_condition(run)
        ),
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
        "processes": result.world_size,
        "final_loss": result.final_loss,
        "best_loss": result.best_loss,
        "best_step": result.best_step,
        "stopped_early": result.stopped_early,
        "loss": f"negative ELBO ({type(result.model.loss).__name__}), nats per example",
        # (step, held-out loss) pairs; the best_* fields follow them when present
        "validation_losses": [list(pair) for pair in result.validation_losses],
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
