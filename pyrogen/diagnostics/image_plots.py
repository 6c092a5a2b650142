"""Plots of image models: grids of images, reconstructions, the latent space, samples of
each class or mixture component, and completions of partly given images.

Like :mod:`~pyrogen.diagnostics.plots`, every function draws on the ``ax`` it is given (a new
figure's axes otherwise) and returns it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import matplotlib
import numpy as np
import torch
from matplotlib.axes import Axes

from pyrogen.checks import check_int
from pyrogen.diagnostics.plots import _as_float_tensor, _axes, reports
from pyrogen.models.base import GenerativeModel

_SEPARATOR_COLOUR = "#4878a8"
#: Channel counts that can be drawn as an image: grey levels or RGB.
_DRAWABLE_CHANNELS = (1, 3)
# A flat example of D = side**2 values is drawn as a side x side image from this side on
# (smaller squares are more likely a table's columns than an image).
_MIN_SQUARE_SIDE = 4
#: Rows of :func:`plot_class_samples` at most (one per class or component).
MAX_GRID_ROWS = 20


def image_shape(example_shape: Sequence[int]) -> tuple[int, ...] | None:
    """How to draw one example of ``example_shape`` as an image, or None if it is not one.

    ``(H, W)`` and ``(1, H, W)`` are grey-level images, ``(3, H, W)`` an RGB image, and a
    flat ``(D,)`` with ``D = s * s`` (``s >= 4``) an ``s x s`` grey image (flattened MNIST).

    Args:
        example_shape: shape of one example, without the leading N.

    Returns:
        ``(H, W)`` or ``(3, H, W)``, or None.

    Example:
        >>> image_shape((784,)), image_shape((1, 28, 28)), image_shape((5,))
        ((28, 28), (28, 28), None)
    """
    shape = tuple(int(d) for d in example_shape)
    if len(shape) == 1:
        side = math.isqrt(shape[0])
        return (side, side) if side * side == shape[0] and side >= _MIN_SQUARE_SIDE else None
    if len(shape) == 2:
        return shape
    if len(shape) == 3 and shape[0] in _DRAWABLE_CHANNELS:
        return shape[1:] if shape[0] == 1 else shape
    return None


def plot_image_grid(
    images: Any,
    ax: Axes | None = None,
    *,
    shape: Sequence[int] | None = None,
    ncols: int | None = None,
    title: str | None = None,
    row_labels: Sequence[str] | None = None,
) -> Axes:
    """Images tiled into a grid, row by row, with thin coloured lines between them.

    Values in [0, 1] are drawn on that scale (0 black, 1 white); other values are scaled from
    their minimum to their maximum.

    Args:
        images: array-like (N, ...) whose N examples are images (see :func:`image_shape`).
        ax: axes to draw on; default a new figure's.
        shape: how to draw one example, ``(H, W)`` or ``(3, H, W)``; default
            ``image_shape(images.shape[1:])``.
        ncols: images per row; default ``ceil(sqrt(N))`` (8 x 8 for 64 images).
        title: axes title.
        row_labels: a name for each row of the grid, written to its left (e.g. the class
            of a row of samples).

    Returns:
        the axes.

    Raises:
        ValueError: the examples cannot be drawn as images of ``shape``, ``ncols`` is not a
            positive integer, or ``row_labels`` does not name every row.

    Example:
        >>> import torch
        >>> from pyrogen.diagnostics import plot_image_grid
        >>> ax = plot_image_grid(torch.rand(64, 784))
        >>> ax.images[0].get_array().shape  # 8 x 8 images of 28 x 28, 1-pixel separators
        (231, 231)
    """
    pictures = _as_images(images, shape)
    if ncols is None:
        ncols = math.ceil(math.sqrt(pictures.shape[0]))
    return _draw_grid(pictures, _axes(ax), ncols, title, row_labels)


def _draw_grid(
    pictures: np.ndarray,
    ax: Axes,
    ncols: int,
    title: str | None,
    row_labels: Sequence[str] | None = None,
) -> Axes:
    """Tile (N, H, W) or (N, H, W, 3) pictures; NaN values are drawn like the separators."""
    check_int("ncols", ncols)
    count = pictures.shape[0]
    low, high = float(np.nanmin(pictures)), float(np.nanmax(pictures))
    if low < 0 or high > 1:
        pictures = (pictures - low) / (high - low if high > low else 1.0)
    nrows = math.ceil(count / ncols)
    if row_labels is not None and len(row_labels) != nrows:
        raise ValueError(f"row_labels: expected {nrows} names, one per row, got {len(row_labels)}")
    height, width = pictures.shape[1:3]
    # Separators are NaN, drawn in a colour of their own so that they stand out against
    # binary images (white lines would merge with white pixels).
    canvas = np.full(
        (nrows * (height + 1) - 1, ncols * (width + 1) - 1, *pictures.shape[3:]), np.nan
    )
    for index, picture in enumerate(pictures):
        top, left = (index // ncols) * (height + 1), (index % ncols) * (width + 1)
        canvas[top : top + height, left : left + width] = picture
    if canvas.ndim == 3:  # RGB: NaN is not drawn in a colour, so separators are white
        ax.imshow(np.nan_to_num(canvas, nan=1.0), interpolation="nearest")
    else:
        cmap = matplotlib.colormaps["gray"].with_extremes(bad=_SEPARATOR_COLOUR)
        ax.imshow(canvas, cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
    if row_labels is None:
        ax.set_axis_off()
    else:
        ax.set_xticks([])
        ax.set_yticks(
            [row * (height + 1) + (height - 1) / 2 for row in range(nrows)], list(row_labels)
        )
        ax.tick_params(axis="y", length=0)
        for spine in ax.spines.values():
            spine.set_visible(False)
    if title is not None:
        ax.set_title(title)
    return ax


def plot_reconstructions(
    model: GenerativeModel,
    x: Any,
    ax: Axes | None = None,
    *,
    n: int = 8,
    shape: Sequence[int] | None = None,
    y: Any = None,
) -> Axes:
    """The first ``n`` examples of ``x`` (top row) above their reconstructions (bottom row).

    A reconstruction is ``model.reconstruct``: the mean of p(x | z) at the posterior mean of
    q(z | x).

    Args:
        model: a fitted autoencoder: a model that reports ``"reconstructions"`` among its
            ``report_plots`` (it has ``reconstruct``), e.g. :class:`~pyrogen.VAE`.
        x: examples of shape ``(N, *model.data_shape)``.
        ax: axes to draw on; default a new figure's.
        n: how many examples to show (at most N).
        shape: how to draw one example (see :func:`plot_image_grid`).
        y: labels (N,) of ``x`` for a model conditioned on them (a
            :class:`~pyrogen.ConditionalVAE` with ``num_classes``), passed to
            ``reconstruct``; None for the others.

    Returns:
        the axes.

    Raises:
        TypeError: ``model`` reports no reconstructions.
        ValueError: ``n`` is not a positive integer, or the examples are not images.

    Example:
        >>> import torch, pyrogen
        >>> from pyrogen.diagnostics import plot_reconstructions
        >>> ax = plot_reconstructions(pyrogen.VAE((64,), latent_dim=2), torch.rand(10, 64))
    """
    if not reports(model, "reconstructions"):
        raise TypeError(
            f"model: expected an autoencoder with reconstruct, got {type(model).__name__}"
        )
    check_int("n", n)
    originals = _as_float_tensor(x)[:n]
    condition = {} if y is None else {"y": _first_labels(y, originals.shape[0], model)}
    with torch.no_grad():
        rebuilt = model.reconstruct(originals.to(model.device), **condition).cpu()
    grid = torch.cat([originals.to(rebuilt.dtype), rebuilt])
    return plot_image_grid(
        grid,
        ax,
        shape=shape,
        ncols=originals.shape[0],
        title="data (top) and reconstructions (bottom)",
    )


def plot_latent(
    model: GenerativeModel,
    x: Any,
    labels: Any = None,
    ax: Axes | None = None,
    *,
    y: Any = None,
) -> Axes:
    """Posterior means of q(z | x), one point per example, coloured by label when given.

    With a 2-D latent space the means are drawn as they are; with more dimensions, their
    first two principal components (the axis labels give the share of variance each
    explains); with one, a histogram.

    Args:
        model: a fitted model that reports ``"latent"`` among its ``report_plots`` (it has
            ``encode(x) -> (loc, scale)``), e.g. :class:`~pyrogen.VAE`.
        x: examples of shape ``(N, *model.data_shape)``.
        labels: class labels (N,) to colour the points by (at most 10 classes get a legend,
            more a colour bar); None for one colour.
        ax: axes to draw on; default a new figure's.
        y: labels (N,) for a model whose encoder is conditioned on them (a
            :class:`~pyrogen.ConditionalVAE` with ``num_classes``: q(z | x, y)), passed to
            ``encode``; None for the others.

    Returns:
        the axes.

    Raises:
        TypeError: ``model`` reports no latent space.
        ValueError: ``labels`` is not of length N.

    Example:
        >>> import torch, pyrogen
        >>> from pyrogen.diagnostics import plot_latent
        >>> vae = pyrogen.VAE((64,), latent_dim=2)
        >>> ax = plot_latent(vae, torch.rand(50, 64), labels=torch.arange(50) % 3)
        >>> ax.get_xlabel()
        'z[0] (posterior mean)'
    """
    if not reports(model, "latent"):
        raise TypeError(f"model: expected a model with encode, got {type(model).__name__}")
    x = _as_float_tensor(x)
    condition = {} if y is None else {"y": _first_labels(y, x.shape[0], model)}
    with torch.no_grad():
        loc, _ = model.encode(x.to(model.device), **condition)
    means = loc.detach().cpu().double()
    classes = None
    if labels is not None:
        classes = np.asarray(
            labels.detach().cpu() if isinstance(labels, torch.Tensor) else labels
        ).reshape(-1)
        if classes.shape[0] != means.shape[0]:
            raise ValueError(f"labels: expected {means.shape[0]} labels, got {classes.shape[0]}")
    ax = _axes(ax)
    if means.shape[1] == 1:
        return _latent_histogram(means[:, 0].numpy(), classes, ax)
    points, (xlabel, ylabel), how = _latent_plane(means)
    style = {"s": 4, "alpha": 0.6, "linewidths": 0, "rasterized": True}
    if classes is None:
        ax.scatter(points[:, 0], points[:, 1], color="C0", **style)
    elif np.unique(classes).size <= 10:
        for k, value in enumerate(np.unique(classes)):
            chosen = classes == value
            ax.scatter(
                points[chosen, 0], points[chosen, 1], color=f"C{k}", label=str(value), **style
            )
        ax.legend(title="label", fontsize="small", markerscale=3, loc="best")
    else:
        dots = ax.scatter(points[:, 0], points[:, 1], c=classes, cmap="viridis", **style)
        ax.figure.colorbar(dots, ax=ax, label="label")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(f"posterior means of {means.shape[0]} examples{how}")
    return ax


def _latent_histogram(values: np.ndarray, classes: np.ndarray | None, ax: Axes) -> Axes:
    """A one-dimensional latent space: a histogram of the means, stacked by label."""
    groups = [values] if classes is None else [values[classes == c] for c in np.unique(classes)]
    names = None if classes is None else [str(c) for c in np.unique(classes)]
    ax.hist(groups, bins=50, stacked=True, label=names)
    ax.set_xlabel("z (posterior mean)")
    ax.set_ylabel("examples")
    if names is not None and len(names) <= 10:
        ax.legend(title="label", fontsize="small")
    ax.set_title(f"posterior means of {values.shape[0]} examples")
    return ax


def _latent_plane(means: torch.Tensor) -> tuple[np.ndarray, tuple[str, str], str]:
    """Points (N, 2) of the means: themselves in 2-D, else their first two principal
    components; the axis labels, and how the title says so."""
    if means.shape[1] == 2:
        return means.numpy(), ("z[0] (posterior mean)", "z[1] (posterior mean)"), ""
    centred = means - means.mean(0)
    _, singular, vectors = torch.linalg.svd(centred, full_matrices=False)
    share = (singular**2 / (singular**2).sum()).numpy()
    labels = tuple(f"PC{i + 1} ({100 * share[i]:.0f}% of variance)" for i in range(2))
    how = f",\nfirst 2 principal components of {means.shape[1]}"
    return (centred @ vectors[:2].T).numpy(), labels, how


def plot_completions(
    model: GenerativeModel,
    x: Any,
    ax: Axes | None = None,
    *,
    given: Any,
    y: Any = None,
    n: int = 8,
    shape: Sequence[int] | None = None,
) -> Axes:
    """The first ``n`` examples of ``x`` (top row), the part of each the model is given
    (middle row; the missing values drawn in the separators' colour) and its completion
    (bottom row: the given values, and the mean of p(x | z, c) elsewhere for z ~ p(z | c)).

    Args:
        model: a fitted model that reports ``"completions"`` among its ``report_plots``
            (it has ``complete(x, y)``), e.g. a :class:`~pyrogen.ConditionalVAE` built with
            ``observed``.
        x: examples of shape ``(N, *model.data_shape)``.
        ax: axes to draw on; default a new figure's.
        given: boolean mask of ``model.data_shape``, True where a value is given (see
            :func:`pyrogen.models.conditional_vae.observed_mask`).
        y: labels (N,) of ``x`` for a model conditioned on them; None for the others.
        n: how many examples to show (at most N).
        shape: how to draw one example (see :func:`plot_image_grid`).

    Returns:
        the axes.

    Raises:
        TypeError: ``model`` reports no completions.
        ValueError: ``n`` is not a positive integer, ``given`` does not fit the examples, or
            they are not images.

    Example:
        >>> import torch, pyrogen
        >>> from pyrogen.models.conditional_vae import observed_mask
        >>> from pyrogen.diagnostics.image_plots import plot_completions
        >>> cvae = pyrogen.ConditionalVAE((64,), latent_dim=2, observed="top")
        >>> ax = plot_completions(cvae, torch.rand(10, 64), given=observed_mask("top", (64,)))
    """
    if not reports(model, "completions"):
        raise TypeError(f"model: expected a model with complete, got {type(model).__name__}")
    check_int("n", n)
    originals = _as_float_tensor(x)[:n]
    mask = torch.as_tensor(given, dtype=torch.bool).cpu()
    if tuple(mask.shape) != tuple(originals.shape[1:]):
        raise ValueError(
            f"given: expected a mask of shape {tuple(originals.shape[1:])} like the examples, "
            f"got {tuple(mask.shape)}"
        )
    condition = {} if y is None else {"y": _first_labels(y, originals.shape[0], model)}
    with torch.no_grad():
        completed = model.complete(originals.to(model.device), **condition).cpu()
    rows = torch.cat([originals.to(completed.dtype), completed])
    pictures = _as_images(rows, shape)
    partial = _as_images(originals.masked_fill(~mask, 0.0), shape)
    hidden = _as_images((~mask).expand_as(originals).to(completed.dtype), shape) > 0
    partial[hidden] = np.nan
    count = originals.shape[0]
    grid = np.concatenate([pictures[:count], partial, pictures[count:]])
    return _draw_grid(
        grid,
        _axes(ax),
        count,
        "given parts (missing values in blue) completed with decoder means",
        row_labels=["data", "given", "completed"],
    )


def plot_class_samples(
    model: GenerativeModel,
    ax: Axes | None = None,
    *,
    per_row: int = 8,
    observed: Any = None,
    shape: Sequence[int] | None = None,
) -> Axes:
    """Samples of each class, or of each mixture component: one row each.

    Rows are ``model.report_samples(per_row, y=k)`` (decoder means for the VAEs) for the
    ``model.label_count`` labels k = 0, 1, ... (at most :data:`MAX_GRID_ROWS` rows): the
    classes of a model with classes (a :class:`~pyrogen.ConditionalVAE` or
    :class:`~pyrogen.SemiSupervisedVAE`), or the components of a
    :class:`~pyrogen.GaussianMixtureVAE`, each row named by ``model.label_names`` (a
    component with its weight). A model that completes given values draws, in every
    row, the completions (``model.complete``) of the same ``observed`` examples under that
    row's label.

    Args:
        model: a fitted model whose ``sample`` takes a label (``model.label_count``).
        ax: axes to draw on; default a new figure's.
        per_row: samples per row.
        observed: examples (``per_row``, ``*model.data_shape``) whose given values condition
            every row (models with given values only).
        shape: how to draw one example (see :func:`plot_image_grid`).

    Returns:
        the axes.

    Raises:
        TypeError: ``model`` has neither classes nor components.
        ValueError: ``per_row`` is not a positive integer, ``observed`` is given to a model
            without given values or does not fit, or the samples are not images.

    Example:
        >>> import pyrogen
        >>> from pyrogen.diagnostics.image_plots import plot_class_samples
        >>> ax = plot_class_samples(pyrogen.SemiSupervisedVAE((64,), latent_dim=2, num_classes=3))
        >>> [label.get_text() for label in ax.get_yticklabels()]
        ['0', '1', '2']
    """
    check_int("per_row", per_row)
    count = model.label_count if isinstance(model, GenerativeModel) else None
    if count is None:
        raise TypeError(
            f"model: expected a model with num_classes or n_components, got {type(model).__name__}"
        )
    what = model.label_kind
    rows = min(count, MAX_GRID_ROWS)
    labels = torch.arange(rows).repeat_interleave(per_row).to(model.device)
    given = None if observed is None else _repeated_rows(model, observed, per_row, rows)
    with torch.no_grad():
        if given is None:
            images = model.report_samples(rows * per_row, labels).cpu()
        else:
            images = model.complete(given, labels).cpu()
    shown = "" if rows == count else f" (the first {rows} of {count})"
    if observed is not None:
        title = f"completions of {per_row} given parts under each label, one row per {what}"
    else:
        title = f"samples ({model.report_samples_name}), one row per {what}"
        if what == "component":
            title += " (its weight)"
    return plot_image_grid(
        images,
        ax,
        shape=shape,
        ncols=per_row,
        title=title + shown,
        row_labels=model.label_names[:rows],
    )


def _repeated_rows(model: GenerativeModel, observed: Any, per_row: int, rows: int) -> torch.Tensor:
    """The ``per_row`` examples whose given values every row completes, once per row."""
    if model.given_mask is None:
        raise ValueError(
            f"observed: expected None for a {type(model).__name__} without given values, "
            "got examples"
        )
    given = _as_float_tensor(observed)[:per_row]
    if given.shape[0] != per_row:
        raise ValueError(f"observed: expected {per_row} examples, got {given.shape[0]}")
    return given.to(model.device).repeat(rows, *[1] * (given.dim() - 1))


def _first_labels(y: Any, count: int, model: GenerativeModel) -> torch.Tensor:
    """The labels of the first ``count`` examples, on the model's device."""
    labels = torch.as_tensor(np.asarray(y.detach().cpu() if torch.is_tensor(y) else y))
    return labels.reshape(-1)[:count].to(model.device)


def _as_images(images: Any, shape: Sequence[int] | None) -> np.ndarray:
    """(N, H, W) grey or (N, H, W, 3) RGB numpy images from (N, ...) examples."""
    tensor = _as_float_tensor(images).detach().cpu()
    if tensor.dim() < 2:
        raise ValueError(f"images: expected shape (N, ...), got {tuple(tensor.shape)}")
    example = tuple(tensor.shape[1:])
    target = image_shape(example if shape is None else shape)
    if target is None or len(target) not in (2, 3) or math.prod(target) != math.prod(example):
        raise ValueError(
            f"images: expected examples that are images ((H, W), (1, H, W), (3, H, W) or a "
            f"square (H * W,)) matching shape {shape}, got examples of shape {example}"
        )
    pictures = tensor.reshape(tensor.shape[0], *target).double().numpy()
    return np.moveaxis(pictures, 1, -1) if len(target) == 3 else pictures
