"""The plots of a run folder: one declarative table, keyed by the stems a model reports.

A model says which plots it has (``model.report_plots``: ``"elbo"``, ``"clusters"``,
``"samples"``, ...); :data:`REPORT_PLOTS` says, for each stem, what the run must have for it
(losses, (N, D >= 2) data, images, a posterior of the weights) and how to draw it. A new
family adds no code here unless it draws a plot no family drew before.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import arviz
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from pyrogen.diagnostics import image_plots, plots
from pyrogen.diagnostics.scoring import label_tensor, seeded
from pyrogen.infer.engine import FitResult
from pyrogen.io import PathLike, atomic_write
from pyrogen.models.base import GenerativeModel

#: Images in ``samples.png`` (an 8 x 8 grid).
SAMPLE_GRID = 64
#: Examples shown in ``reconstructions.png`` and ``completions.png``, and samples per row
#: of ``class_samples.png`` and ``component_samples.png``.
RECONSTRUCTED = 8
#: File name extension of every plot.
PLOT_SUFFIX = ".png"

FIGURE_SIZE = (6.0, 4.5)
_SQUARE_FIGURE = (6.0, 6.0)
_STRIP_FIGURE = (8.0, 2.4)
_THREE_ROW_FIGURE = (8.0, 3.4)
_DPI = 120


@dataclass(frozen=True)
class RunData:
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
class ReportPlot:
    """How to draw one plot a model reports, and what the run needs for it."""

    draw: Callable[[RunData, Axes], Axes]
    # Whether the run has what the plot is drawn from (the model has the plot already).
    needs: Callable[[RunData], bool]
    # Inches (width, height), or a function of the run giving them.
    figsize: tuple[float, float] | Callable[[RunData], tuple[float, float]] = FIGURE_SIZE


# --- what a run has ---------------------------------------------------------------------
def _has_losses(run: RunData) -> bool:
    return run.result is not None and bool(run.result.losses)


def _has_two_columns(run: RunData) -> bool:
    return run.x.dim() == 2 and run.x.shape[1] >= 2


def _has_plane(run: RunData) -> bool:
    return run.x.dim() == 2 and run.x.shape[1] == 2


def _has_weights_posterior(run: RunData) -> bool:
    return run.idata is not None and plots.WEIGHTS in getattr(run.idata, "posterior", {})


def _has_images(run: RunData) -> bool:
    return run.image_shape is not None


def _always(run: RunData) -> bool:
    return True


# --- how to draw ------------------------------------------------------------------------
def _draw_samples(run: RunData, ax: Axes) -> Axes:
    with seeded(run.seed), torch.no_grad():
        images = run.model.report_samples(SAMPLE_GRID).cpu()
    return image_plots.plot_image_grid(
        images,
        ax,
        shape=run.image_shape,
        title=f"{SAMPLE_GRID} samples ({run.model.report_samples_name})",
    )


def _draw_label_samples(run: RunData, ax: Axes) -> Axes:
    """One row per class (or component); with given values, those of the first held-out
    examples, completed under each label."""
    given = run.model.given_mask is not None
    observed = run.held_out[:RECONSTRUCTED] if given else None
    with seeded(run.seed):
        return image_plots.plot_class_samples(
            run.model, ax, per_row=RECONSTRUCTED, observed=observed, shape=run.image_shape
        )


def _grid_figsize(run: RunData) -> tuple[float, float]:
    """A figure for a grid of RECONSTRUCTED columns and one row per class or component."""
    rows = min(run.model.label_count or 1, image_plots.MAX_GRID_ROWS)
    height, width = run.image_shape[-2:] if run.image_shape else (1, 1)
    return (6.0, min(10.0, max(2.0, 0.8 + 5.2 * rows * height / (RECONSTRUCTED * width))))


def _condition(run: RunData) -> torch.Tensor | None:
    """The labels of the held-out examples where the model is conditioned on them."""
    if not run.model.conditions_on_labels or run.labels is None:
        return None
    return label_tensor(run.labels, run.held_out.shape[0])


def _draw_completions(run: RunData, ax: Axes) -> Axes:
    return image_plots.plot_completions(
        run.model,
        run.held_out,
        ax,
        given=run.model.given_mask,
        y=_condition(run),
        n=RECONSTRUCTED,
        shape=run.image_shape,
    )


def _draw_reconstructions(run: RunData, ax: Axes) -> Axes:
    return image_plots.plot_reconstructions(
        run.model, run.held_out, ax, n=RECONSTRUCTED, shape=run.image_shape, y=_condition(run)
    )


#: The plots a run can draw, by the stem a model names in ``report_plots`` (the file is
#: ``<stem>.png``): how each is drawn and what the run needs for it. Files are written in
#: this order. The plotting functions are looked up in :mod:`~pyrogen.diagnostics.plots` and
#: :mod:`~pyrogen.diagnostics.image_plots` when a plot is drawn (not bound here), so they can
#: be replaced, e.g. by tests.
REPORT_PLOTS: dict[str, ReportPlot] = {
    "elbo": ReportPlot(lambda run, ax: plots.plot_elbo(run.result, ax), needs=_has_losses),
    "clusters": ReportPlot(
        lambda run, ax: plots.plot_clusters(run.model, run.x, ax, feature_names=run.columns),
        needs=_has_two_columns,
    ),
    "weights_posterior": ReportPlot(
        lambda run, ax: plots.plot_weights_posterior(run.idata, ax), needs=_has_weights_posterior
    ),
    "samples": ReportPlot(_draw_samples, needs=_has_images, figsize=_SQUARE_FIGURE),
    "class_samples": ReportPlot(_draw_label_samples, needs=_has_images, figsize=_grid_figsize),
    "component_samples": ReportPlot(_draw_label_samples, needs=_has_images, figsize=_grid_figsize),
    "completions": ReportPlot(_draw_completions, needs=_has_images, figsize=_THREE_ROW_FIGURE),
    # Models with given values report completions instead: the decoder's outputs there
    # are never trained (the likelihood leaves them out).
    "reconstructions": ReportPlot(_draw_reconstructions, needs=_has_images, figsize=_STRIP_FIGURE),
    "latent": ReportPlot(
        lambda run, ax: image_plots.plot_latent(
            run.model, run.held_out, run.labels, ax, y=_condition(run)
        ),
        needs=_always,
    ),
    "sample_scatter": ReportPlot(
        lambda run, ax: plots.plot_sample_scatter(run.model, run.x, ax, feature_names=run.columns),
        needs=_has_two_columns,
    ),
    "energy": ReportPlot(
        lambda run, ax: plots.plot_energy_landscape(
            run.model, run.x, ax, feature_names=run.columns
        ),
        needs=_has_plane,
        figsize=(6.0, 5.0),
    ),
}


def plot_writers(run: RunData) -> dict[str, Callable[[Path], None]]:
    """File name -> writer of each plot the model reports and the run has what it needs for.

    Raises:
        ValueError: the model reports a plot this table does not know.
    """
    unknown = sorted(set(run.model.report_plots) - set(REPORT_PLOTS))
    if unknown:
        raise ValueError(
            f"model.report_plots: expected stems among {list(REPORT_PLOTS)}, got {unknown}"
        )
    writers = {}
    for stem, plot in REPORT_PLOTS.items():
        if stem in run.model.report_plots and plot.needs(run):
            size = plot.figsize(run) if callable(plot.figsize) else plot.figsize
            writers[stem + PLOT_SUFFIX] = figure_writer(functools.partial(plot.draw, run), size)
    return writers


def drawable_shape(
    shape: Sequence[int] | None, example_shape: Sequence[int]
) -> tuple[int, ...] | None:
    """How to draw one example: ``shape`` checked against the examples' shape, else
    guessed from it (see :func:`~pyrogen.diagnostics.image_plots.image_shape`).

    Raises:
        ValueError: ``shape`` is not an image shape, or not of as many values as an example.
    """
    if shape is None:
        return image_plots.image_shape(example_shape)
    drawable = image_plots.image_shape(shape)
    if drawable is None:
        raise ValueError(
            f"image_shape: expected (H, W), (1, H, W) or (3, H, W), got {tuple(shape)}"
        )
    values = math.prod(example_shape)
    if math.prod(drawable) != values:
        raise ValueError(
            f"image_shape: expected {values} values like the examples of shape "
            f"{tuple(example_shape)}, got {tuple(shape)}"
        )
    return drawable


def figure_writer(
    draw: Callable[[Axes], Axes], figsize: tuple[float, float] = FIGURE_SIZE
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
        >>> from pyrogen.diagnostics import figure_writer, plot_image_grid
        >>> write = figure_writer(lambda ax: plot_image_grid(torch.rand(16, 64), ax))
        >>> write(f"{tempfile.mkdtemp()}/grid.png")
    """

    def write(path: PathLike) -> None:
        figure = Figure(figsize=figsize, layout="constrained")
        draw(figure.subplots())
        with atomic_write(path) as handle:
            figure.savefig(handle, format="png", dpi=_DPI)

    return write
