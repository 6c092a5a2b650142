"""Run folders: everything about one fit, written all at once or not at all.

A run folder holds ``summary.json``, ``model.pt`` (readable by :func:`pyrogen.load`),
``inference_data.nc`` (ArviZ) and plots. It is assembled in a hidden temporary sibling
folder that is renamed into place at the end, so an interrupted or failed run never leaves
a half-written folder, and an existing run is never overwritten.

The plots are those the model reports (``model.report_plots``) that the run has what they
need for, drawn as :data:`~pyrogen.diagnostics.run_plots.REPORT_PLOTS` says: losses for
``elbo.png``, (N, D >= 2) data for ``clusters.png``, a posterior of the mixing weights for
``weights_posterior.png``, and examples that are images for ``samples.png``,
``reconstructions.png``, ``class_samples.png``, ``component_samples.png`` and
``completions.png``; ``latent.png`` needs nothing more. The held-out statistics are
:func:`~pyrogen.diagnostics.scoring.score`'s.
"""

from __future__ import annotations

import datetime
import errno
import json
import os
import secrets
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import arviz
import numpy as np
import torch

from pyrogen.diagnostics.metrics import confusion_matrix
from pyrogen.diagnostics.run_plots import RunData, drawable_shape, figure_writer, plot_writers
from pyrogen.diagnostics.scoring import (
    DEFAULT_IW_SAMPLES,
    as_float_tensor,
    check_model,
    jsonable,
    score,
    summarize,
)
from pyrogen.infer.engine import FitResult
from pyrogen.io import PathLike, atomic_write, remove_stale_temporaries, temporary_prefix
from pyrogen.models.base import GenerativeModel
from pyrogen.version import __version__

__all__ = [
    "DEFAULT_IW_SAMPLES",
    "INFERENCE_DATA_FILE",
    "MODEL_FILE",
    "SUMMARY_FILE",
    "check_run_folder",
    "figure_writer",
    "write_run",
]

SUMMARY_FILE = "summary.json"
MODEL_FILE = "model.pt"
INFERENCE_DATA_FILE = "inference_data.nc"

# Keys of summary.json that write_run adds to summarize's.
_RUN_KEYS = (
    "columns",
    "training",
    "test",
    "classification",
    "image_shape",
    "files",
    "pyrogen_version",
)


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
    iw_samples: int | None = None,
    seed: int = 0,
) -> Path:
    """Write a run folder for a fitted model.

    Files: ``summary.json``, ``model.pt``, ``inference_data.nc`` (``idata`` given), and
    the plots the model reports that the run has what they need for (see the module's
    description); they are drawn from ``test_data`` when given, else ``data``.

    ``summary.json`` holds :func:`summarize`'s statistics (of ``data``) plus ``columns``,
    ``image_shape`` (for images), ``training`` (steps, time, device, losses and ``loss``,
    naming the bound: the negative ELBO of ``model.loss``, nats per example), ``test``
    (:func:`score` of ``test_data``, when given), ``files``, ``pyrogen_version``,
    ``created_at`` and the keys of ``extra``.

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
            ``predict`` of a model that predicts classes or components (see :func:`score`).
        image_shape: how to draw one example, ``(H, W)`` or ``(3, H, W)``; default from
            the examples' shape where it is an image's (see
            :func:`~pyrogen.diagnostics.image_plots.image_shape`); image plots need one.
        iw_samples: ``num_samples`` of the scores in ``test`` (see :func:`score`, which
            also gets ``labels``).
        seed: seeds the Monte Carlo draws of ``test`` and of the plots of samples.

    Returns:
        the run folder's path.

    Raises:
        ValueError: ``out_dir`` exists and is not empty (a run is never overwritten),
            ``columns`` / ``extra`` / ``image_shape`` do not fit, or ``labels`` are missing
            for a model conditioned on them.

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
    run = _run_data(model, result, data, test_data, labels, columns, idata, image_shape, seed)
    summary = _summary(run, test_data is not None, iw_samples, extra)
    _write_folder(out, _writers(run, summary))
    return out


def _run_data(
    model: GenerativeModel,
    result: FitResult | None,
    data: Any,
    test_data: Any,
    labels: Any,
    columns: Sequence[str] | None,
    idata: arviz.InferenceData | None,
    image_shape: Sequence[int] | None,
    seed: int,
) -> RunData:
    """The arguments of :func:`write_run`, checked, as what its plots are drawn from."""
    check_model(model)
    if result is not None and not isinstance(result, FitResult):
        raise TypeError(f"result: expected a FitResult or None, got {type(result).__name__}")
    x = as_float_tensor(data, "data")
    columns = _check_columns(columns, x)
    held_out = x if test_data is None else as_float_tensor(test_data, "test_data")
    run = RunData(
        model=model,
        result=result,
        x=x,
        held_out=held_out,
        labels=_check_labels(labels, held_out),
        columns=columns,
        idata=idata,
        image_shape=drawable_shape(image_shape, tuple(x.shape[1:])),
        seed=seed,
    )
    if model.conditions_on_labels and run.labels is None:
        raise ValueError(
            f"labels: expected the labels of the held-out examples for a {model.family} "
            f"conditioned on {model.label_count} classes, got None"
        )
    return run


def _summary(
    run: RunData, tested: bool, iw_samples: int | None, extra: Mapping[str, Any] | None
) -> dict[str, Any]:
    """summary.json's statistics, without the list of files and when it was written."""
    summary = summarize(run.model, run.x)
    summary["columns"] = run.columns
    if run.image_shape is not None:
        summary["image_shape"] = list(run.image_shape)
    if run.result is not None:
        summary["training"] = _training(run.result)
    if tested:
        summary["test"] = score(
            run.model, run.held_out, labels=run.labels, iw_samples=iw_samples, seed=run.seed
        )
    if run.labels is not None and run.model.predicts == "class":
        summary["classification"] = _classification(run.model, run.held_out, run.labels, tested)
    summary.update(_check_extra(extra, summary))
    return summary


def _classification(
    model: GenerativeModel, x: torch.Tensor, labels: np.ndarray, held_out: bool
) -> dict:
    """Accuracy and confusion matrix of ``predict`` on the labelled rows x: the held-out
    rows, or those the model was fitted on (a classifier's run without held-out rows)."""
    with torch.no_grad():
        predicted = model.predict(x.to(model.device)).cpu().numpy()
    counts = confusion_matrix(labels, predicted, model.label_count)
    rows = int(counts.sum())
    return {
        "rows": (
            "the labelled held-out rows (not fitted on)"
            if held_out
            else "the labelled rows it was fitted on (not held out)"
        ),
        "held_out": held_out,
        "labelled_rows": rows,
        "accuracy": float(np.trace(counts) / max(rows, 1)),
        "confusion_matrix": counts.tolist(),
    }


def _writers(run: RunData, summary: dict[str, Any]) -> dict[str, Callable[[Path], None]]:
    """File name -> writer of every file of the run, ``summary.json`` (completed with the
    list of files, the version and the time) last."""
    writers = plot_writers(run)
    if run.idata is not None:
        writers[INFERENCE_DATA_FILE] = lambda path: run.idata.to_netcdf(str(path))
    writers[MODEL_FILE] = run.model.save
    summary["files"] = sorted([*writers, SUMMARY_FILE])
    summary["pyrogen_version"] = __version__
    summary["created_at"] = datetime.datetime.now(datetime.timezone.utc).isoformat(
        timespec="seconds"
    )
    writers[SUMMARY_FILE] = lambda path: _write_json(path, summary)
    return writers


def _write_folder(out: Path, writers: Mapping[str, Callable[[Path], None]]) -> None:
    """Write every file into a staging folder, then rename it to ``out`` (all or nothing)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = _staging_folder(out)
    try:
        for name, write in writers.items():
            write(staging / name)
        _move_into_place(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


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


#: Most importance samples (or diffusion-step draws) per example a run's summary may ask for.
MAX_SCORE_SAMPLES = 100_000


def read_run_summary(path: PathLike) -> dict[str, Any]:
    """The summary.json at ``path``, with what ``pyrogen sample`` and ``evaluate`` read of it
    checked (types; seed in 0..2**63-1; image_shape 2 or 3 positive ints; test sample counts
    in 1..:data:`MAX_SCORE_SAMPLES`).

    Raises:
        ValueError: naming ``path`` and the key, and what was expected.

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "summary.json"
        >>> _ = path.write_text('{"family": "vae", "config": {}, "seed": "abc"}')
        >>> read_run_summary(path)
        Traceback (most recent call last):
        ...
        ValueError: ...summary.json: 'seed': expected an integer in 0..2**63-1, got 'abc'
    """
    try:
        run = json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(
            f"{path}: expected a run's summary (JSON), got invalid JSON ({error})"
        ) from None
    if not isinstance(run, dict):
        raise ValueError(f"{path}: expected a JSON object, got a {type(run).__name__}")
    test = run.get("test", {})
    is_int = lambda v: isinstance(v, int) and not isinstance(v, bool)  # noqa: E731
    checks = {
        "family": (run.get("family"), lambda v: isinstance(v, str), "a family name"),
        "config": (run.get("config"), lambda v: isinstance(v, dict), "an object"),
        "seed": (run.get("seed", 0), lambda v: is_int(v) and 0 <= v < 2**63,
                 "an integer in 0..2**63-1"),
        "image_shape": (run.get("image_shape"), lambda v: v is None or (
            isinstance(v, list) and len(v) in (2, 3) and all(is_int(n) and 0 < n < 2**16 for n in v)
        ), "null or 2 or 3 positive integers"),
        "columns": (run.get("columns"), lambda v: v is None or (
            isinstance(v, list) and all(isinstance(n, str) for n in v)), "null or names"),
        "dataset": (run.get("dataset"), lambda v: v is None or isinstance(v, str), "a name"),
        "preprocessing": (run.get("preprocessing", {}), lambda v: isinstance(v, dict) and (
            v.get("binarize") is None or isinstance(v["binarize"], str)), "an object"),
        "test": (test, lambda v: isinstance(v, dict), "an object"),
    }  # fmt: skip
    for name in ("iw_samples", "step_samples") if isinstance(test, dict) else ():
        checks[f"test.{name}"] = (test.get(name, 1), lambda v: is_int(v) and (
            0 < v <= MAX_SCORE_SAMPLES), f"an integer in 1..{MAX_SCORE_SAMPLES}")  # fmt: skip
    for key, (value, accept, expected) in checks.items():
        if not accept(value):
            got = "nothing" if value is None else repr(value)[:60]
            raise ValueError(f"{path}: {key!r}: expected {expected}, got {got}")
    return run


def _staging_folder(out: Path) -> Path:
    # A fresh hidden sibling on the same file system, so the final rename is atomic. mkdir
    # (rather than tempfile.mkdtemp's 0700) gives it the permissions a normal folder gets.
    remove_stale_temporaries(out)  # a staging folder of a run killed while writing
    staging = out.parent / f"{temporary_prefix(out, 'stage')}{secrets.token_hex(4)}.tmp"
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


def _check_labels(labels: Any, x: torch.Tensor) -> np.ndarray | None:
    if labels is None:
        return None
    values = np.asarray(labels.detach().cpu() if isinstance(labels, torch.Tensor) else labels)
    if values.ndim != 1 or values.shape[0] != x.shape[0]:
        raise ValueError(
            f"labels: expected shape ({x.shape[0]},), one per held-out example, got {values.shape}"
        )
    return values


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    text = json.dumps(jsonable(payload), indent=2, allow_nan=False)
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
        "loss": result.model.training_objective,
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
    reserved = {*summary, *_RUN_KEYS, "created_at"}
    clashes = sorted(set(extra) & reserved)
    if clashes:
        raise ValueError(f"extra: expected keys other than the summary's own, got {clashes}")
    try:
        json.dumps(jsonable(dict(extra)), allow_nan=False)
    except (TypeError, ValueError) as error:
        raise ValueError(f"extra: expected JSON-serialisable values, got {error}") from error
    return dict(extra)
