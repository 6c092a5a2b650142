"""Plots of a fit: the loss curve, mixture clusters with covariance ellipses, the posterior
of the mixing weights, and for image models grids of images, reconstructions, the latent
space, samples of each class or mixture component, and completions of partly given images.

Every function draws on the ``ax`` it is given (a new figure's axes otherwise) and returns
it, so plots compose into the caller's figures and into run reports.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import arviz
import matplotlib
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.patches import Ellipse
from matplotlib.ticker import MaxNLocator

from pyrogen.checks import as_tensor, check_int, float_dtype_of
from pyrogen.infer.engine import FitResult
from pyrogen.models.base import GenerativeModel
from pyrogen.models.mixture_em import MixtureParameters

#: Variable of the posterior that holds the mixing weights (the GMM's ``weights`` site).
WEIGHTS = "weights"
_SEPARATOR_COLOUR = "#4878a8"
#: Channel counts that can be drawn as an image: grey levels or RGB.
_DRAWABLE_CHANNELS = (1, 3)
# A flat example of D = side**2 values is drawn as a side x side image from this side on
# (smaller squares are more likely a table's columns than an image).
_MIN_SQUARE_SIDE = 4
# The running mean spans this fraction of the steps: long enough to average minibatch noise
# away, short enough to follow the curve's shape.
_RUNNING_MEAN_FRACTION = 0.02
_MIN_RUNNING_MEAN = 5
# The loss axis spans at least this many nats per example: a fit that starts converged (a
# mixture's EM start, polished in a few steps) changes its loss by far less, and an axis
# fitted to that change would draw rounding as a training curve.
_MIN_LOSS_SPAN = 0.01
# Fewer steps than this are drawn as points: too few for a curve.
_MIN_CURVE_STEPS = 10
#: Rows of :func:`plot_class_samples` at most (one per class or component).
MAX_GRID_ROWS = 20
# The energy landscape's colours span this many nats below the highest log-density: deeper
# tails would take every colour and flatten the valleys the data sit in.
_LANDSCAPE_DEPTH = 12.0
# The landscape's grid reaches this share of the data's range beyond it on every side.
_LANDSCAPE_MARGIN = 0.15


def plot_elbo(
    result_or_losses: FitResult | Sequence[float] | np.ndarray | torch.Tensor,
    ax: Axes | None = None,
    *,
    log_scale: bool | None = None,
) -> Axes:
    """The loss (negative ELBO, nats per example) at every step, its running mean and the best step.

    Minibatch and sampled-ELBO losses are noisy estimates, so a running mean over about 2%
    of the steps (at least 5) is drawn on top of them. Fewer than 10 steps are drawn as
    points, and the loss axis spans at least 0.01 nats per example: a fit that changed its
    loss by less (one that started at a converged point, as a mixture's EM start) is drawn
    flat and titled "converged" with its value, not stretched into a curve.

    Args:
        result_or_losses: a :class:`~pyrogen.FitResult` or a sequence of per-step losses.
        ax: axes to draw on; default a new figure's.
        log_scale: log y axis; default when every loss is positive and they span more than
            a factor of 10.

    Returns:
        the axes.

    Raises:
        TypeError: ``result_or_losses`` is neither a FitResult nor numbers.
        ValueError: no losses, or a loss is NaN or infinite.

    Example:
        >>> import pyrogen
        >>> from pyrogen.diagnostics import plot_elbo
        >>> gmm = pyrogen.GaussianMixture(2, inference="variational")
        >>> result = pyrogen.fit(gmm, pyrogen.data.old_faithful(), steps=40, progress=False)
        >>> ax = plot_elbo(result)
        >>> ax.get_xlabel()
        'step'
    """
    losses, bound = _losses(result_or_losses)
    ax = _axes(ax)
    steps = np.arange(losses.size)
    window = _running_mean_window(losses.size)
    # Raw losses stay visible but faint when a running mean is drawn over them.
    ax.plot(
        steps,
        losses,
        color="C0",
        alpha=0.35 if window > 1 else 1.0,
        linewidth=0.8,
        marker="o" if losses.size < _MIN_CURVE_STEPS else None,
        label="loss per step",
    )
    if window > 1:
        running = np.convolve(losses, np.ones(window) / window, mode="valid")
        ax.plot(steps[window - 1 :], running, color="C0", label=f"running mean ({window} steps)")
    best, best_loss = _best_step(result_or_losses, losses)
    ax.plot(
        [best],
        [best_loss],
        marker="*",
        markersize=12,
        color="C3",
        linestyle="none",
        label=f"best: {best_loss:.4g} at step {best}",
    )
    _loss_axes(ax, losses, log_scale, bound)
    ax.legend(loc="upper right", fontsize="small")
    return ax


def _loss_axes(ax: Axes, losses: np.ndarray, log_scale: bool | None, bound: str | None) -> None:
    """Scale, labels and title of the loss plot: log for losses spanning more than a
    factor of 10, and at least ``_MIN_LOSS_SPAN`` wide (titled "converged") when flat."""
    if log_scale is None:
        positive = bool((losses > 0).all())
        log_scale = positive and losses.max() / losses.min() > 10
    title = bound or "negative ELBO"
    flat = np.ptp(losses) < _MIN_LOSS_SPAN
    if log_scale:
        ax.set_yscale("log")
    elif flat:
        middle = (losses.max() + losses.min()) / 2
        ax.set_ylim(middle - _MIN_LOSS_SPAN, middle + _MIN_LOSS_SPAN)
        ax.ticklabel_format(axis="y", useOffset=False, style="plain")
        title += (
            f"\nconverged: {losses[-1]:.4f} at step {losses.size}, "
            f"changing < {_MIN_LOSS_SPAN} over {losses.size} step(s)"
        )
    if losses.size < _MIN_CURVE_STEPS:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats per example)")
    ax.set_title(title)


def _best_step(source: Any, losses: np.ndarray) -> tuple[int, float]:
    """The best step and its loss: the engine's (what it restored, an epoch mean for
    minibatches) for a FitResult, else the lowest loss."""
    if isinstance(source, FitResult) and math.isfinite(source.best_loss):
        return min(source.best_step, losses.size - 1), source.best_loss
    best = int(np.argmin(losses))
    return best, float(losses[best])


def plot_clusters(
    model: GenerativeModel,
    x: Any,
    ax: Axes | None = None,
    *,
    dims: tuple[int, int] = (0, 1),
    n_std: float = 2.0,
    feature_names: Sequence[str] | None = None,
) -> Axes:
    """Rows of ``x`` coloured by their most likely component, with covariance ellipses.

    Each ellipse is the contour at ``n_std`` standard deviations of a component's marginal
    Gaussian over the two plotted features; crosses mark the means.

    Args:
        model: a fitted mixture: a model that reports ``"clusters"`` among its
            ``report_plots`` (it has ``predict`` and ``mixture_parameters``).
        x: data of shape (N, D), D >= 2.
        ax: axes to draw on; default a new figure's.
        dims: the two feature indices to plot, in ``[0, D)``.
        n_std: ellipse radius in standard deviations (> 0).
        feature_names: D names, for the axis labels.

    Returns:
        the axes.

    Raises:
        TypeError: ``model`` is not a mixture (reports no clusters).
        ValueError: D < 2, ``dims`` out of range or repeated, ``n_std`` not positive, or
            ``feature_names`` not of length D.

    Example:
        >>> import pyrogen
        >>> from pyrogen.diagnostics import plot_clusters
        >>> x = pyrogen.data.old_faithful()
        >>> gmm = pyrogen.GaussianMixture(2)
        >>> _ = pyrogen.fit(gmm, x, steps=20, progress=False)
        >>> ax = plot_clusters(gmm, x, feature_names=["eruptions", "waiting"])
        >>> len(ax.patches)  # one ellipse per component
        2
    """
    if not reports(model, "clusters"):
        raise TypeError(
            f"model: expected a mixture with predict and mixture_parameters, got "
            f"{type(model).__name__}"
        )
    x = as_tensor(x, name="x", ndim=2)
    first, second = _check_dims(dims, x.shape[1])
    names = _check_cluster_options(x.shape[1], n_std, feature_names)
    labels = model.predict(x).cpu().numpy()
    params = model.mixture_parameters()
    weights = params.weights.detach().cpu().numpy()
    means = params.locs.detach().cpu().numpy()[:, [first, second]]
    covariances = _marginal_covariances(params, (first, second))
    points = x.cpu().numpy()
    ax = _axes(ax)
    colours = [f"C{k % 10}" for k in range(len(weights))]
    ax.scatter(points[:, first], points[:, second], c=[colours[k] for k in labels], s=12, alpha=0.6)
    for k, colour in enumerate(colours):
        width, height, angle = _ellipse_geometry(covariances[k], n_std)
        ax.add_patch(
            Ellipse(means[k], width, height, angle=angle, fill=False, edgecolor=colour, linewidth=2)
        )
        ax.plot(
            *means[k],
            marker="x",
            markersize=10,
            markeredgewidth=2,
            color=colour,
            linestyle="none",
            label=f"component {k} (weight {weights[k]:.2f})",
        )
    ax.set_xlabel(names[first])
    ax.set_ylabel(names[second])
    ax.set_title(f"{len(weights)} components, {n_std:g}-sd ellipses")
    ax.legend(loc="best", fontsize="small")
    return ax


def plot_sample_scatter(
    model: GenerativeModel,
    x: Any,
    ax: Axes | None = None,
    *,
    n: int = 1000,
    dims: tuple[int, int] = (0, 1),
    feature_names: Sequence[str] | None = None,
) -> Axes:
    """``n`` draws of ``model.sample`` over the rows of ``x`` (grey), two features against
    each other: where the samples of a model without a likelihood (a GAN) fall.

    Args:
        model: a fitted model that draws rows (N, D).
        x: data of shape (N, D), D >= 2.
        ax: axes to draw on; default a new figure's.
        n: draws.
        dims: the two feature indices to plot, in ``[0, D)``.
        feature_names: D names, for the axis labels.

    Returns:
        the axes.
    """
    x = _as_float_tensor(x)
    first, second = _check_dims(dims, x.shape[-1] if x.dim() == 2 else 0)
    names = _feature_names(x.shape[1], feature_names)
    with torch.no_grad():
        draws = model.sample(n).reshape(n, -1).detach().cpu().numpy()
    data = x.cpu().numpy()
    ax = _axes(ax)
    ax.scatter(data[:, first], data[:, second], s=3, color="0.7", label=f"data ({len(data)})")
    ax.scatter(draws[:, first], draws[:, second], s=3, alpha=0.6, label=f"samples ({n})")
    ax.set_xlabel(names[first])
    ax.set_ylabel(names[second])
    ax.set_title(f"{type(model).__name__}: samples over the data")
    ax.legend(loc="best", fontsize="small", markerscale=3)
    return ax


def plot_energy_landscape(
    model: GenerativeModel,
    x: Any,
    ax: Axes | None = None,
    *,
    points: int = 120,
    feature_names: Sequence[str] | None = None,
) -> Axes:
    """The log-density log p(x) = -E(x) - log Z of a 2-D energy model as filled contours
    (valleys of the energy are the bright hills of the density) on a grid over the range
    of ``x``, with the rows of ``x`` on top.

    The colours span the 12 nats below the highest log-density; the title says how log Z
    was computed (quadrature in 2-D: exact to its stated error).

    Args:
        model: a fitted model that reports ``"energy"`` among its ``report_plots`` (it has
            ``log_prob`` and ``log_partition``), e.g. :class:`~pyrogen.EnergyDensity`.
        x: data of shape (N, 2).
        ax: axes to draw on; default a new figure's.
        points: grid nodes per side (>= 2).
        feature_names: 2 names, for the axis labels.

    Returns:
        the axes.

    Raises:
        TypeError: ``model`` reports no energy landscape.
        ValueError: ``x`` is not of 2 features, ``points`` < 2, or ``feature_names`` not of
            length 2.

    Example:
        >>> import pyrogen
        >>> from pyrogen.diagnostics import plot_energy_landscape
        >>> x = pyrogen.data.old_faithful()
        >>> ebm = pyrogen.EnergyDensity(2, hidden=(16,))
        >>> _ = pyrogen.fit(ebm, x, steps=20, progress=False)
        >>> ax = plot_energy_landscape(ebm, x, points=40)
        >>> ax.get_title()
        'log p(x) = -E(x) - log Z, log Z by quadrature'
    """
    if not reports(model, "energy"):
        raise TypeError(
            f"model: expected an energy model with log_partition, got {type(model).__name__}"
        )
    x = as_tensor(x, name="x", ndim=2)
    if x.shape[1] != 2:
        raise ValueError(f"x: expected 2 features for an energy landscape, got {x.shape[1]}")
    if check_int("points", points) < 2:
        raise ValueError(f"points: expected at least 2, got {points}")
    names = _feature_names(2, feature_names)
    low, high = x.min(0).values, x.max(0).values
    pad = _LANDSCAPE_MARGIN * (high - low).clamp(min=1e-6)
    axes = [
        torch.linspace(float(a), float(b), points)
        for a, b in zip(low - pad, high + pad, strict=True)
    ]
    grid = torch.cartesian_prod(*axes).to(model.device)
    with torch.no_grad():
        log_p = model.log_prob(grid).reshape(points, points).T.double().cpu().numpy()
    top = float(log_p.max())
    levels = np.linspace(max(top - _LANDSCAPE_DEPTH, float(log_p.min())), top, 25)
    ax = _axes(ax)
    filled = ax.contourf(
        axes[0].numpy(), axes[1].numpy(), np.maximum(log_p, levels[0]), levels=levels
    )
    ax.figure.colorbar(filled, ax=ax, label="log p(x), nats")
    rows = x.cpu().numpy()
    ax.scatter(rows[:, 0], rows[:, 1], s=4, c="white", edgecolors="black", linewidths=0.2)
    ax.set_xlabel(names[0])
    ax.set_ylabel(names[1])
    ax.set_title(f"log p(x) = -E(x) - log Z, log Z by {model.log_partition().method}")
    return ax


def _check_cluster_options(
    n_features: int, n_std: Any, feature_names: Sequence[str] | None
) -> list[str]:
    """The names of the features, once ``n_std`` and ``feature_names`` are checked."""
    if not (isinstance(n_std, (int, float)) and math.isfinite(n_std) and n_std > 0):
        raise ValueError(f"n_std: expected a positive number, got {n_std!r}")
    return _feature_names(n_features, feature_names)


def _feature_names(n_features: int, feature_names: Sequence[str] | None) -> list[str]:
    """``feature_names`` checked for length, or "feature i" names."""
    if feature_names is None:
        return [f"feature {i}" for i in range(n_features)]
    if len(feature_names) != n_features:
        raise ValueError(f"feature_names: expected {n_features} names, got {len(feature_names)}")
    return list(feature_names)


def _marginal_covariances(params: MixtureParameters, dims: tuple[int, int]) -> np.ndarray:
    """Each component's (2, 2) covariance over two features, for every covariance type.

    A Gaussian's marginal over some features keeps just their rows and columns of the
    covariance: full (K, D, D), tied (D, D, shared), diag (K, D) variances, spherical (K,).

    Returns:
        array of shape (K, 2, 2).
    """
    n_components = params.weights.shape[-1]
    c = params.covariances.detach().cpu().double().numpy()
    index = list(dims)
    kind = params.covariance_type
    if kind == "full":
        return c[:, index][:, :, index]
    if kind == "tied":
        return np.broadcast_to(c[index][:, index], (n_components, 2, 2))
    if kind == "diag":
        return np.stack([np.diag(row[index]) for row in c])
    if kind == "spherical":
        return c[:, None, None] * np.eye(2)
    raise ValueError(
        f"covariance_type: expected 'full', 'tied', 'diag' or 'spherical', got {kind!r}"
    )


def _ellipse_geometry(covariance: np.ndarray, n_std: float) -> tuple[float, float, float]:
    """Width, height and angle (degrees) of the ``n_std``-sd contour of a 2-D Gaussian.

    The axes are the covariance's eigenvectors; the width lies along the largest.

    Args:
        covariance: (2, 2) symmetric positive definite.
        n_std: radius in standard deviations.

    Returns:
        ``(width, height, angle)`` for :class:`matplotlib.patches.Ellipse`.
    """
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)  # ascending
    major = eigenvectors[:, 1]
    angle = math.degrees(math.atan2(major[1], major[0]))
    width, height = 2 * n_std * np.sqrt(np.clip(eigenvalues[::-1], 0, None))
    return float(width), float(height), angle


def plot_weights_posterior(idata: arviz.InferenceData, ax: Axes | None = None) -> Axes:
    """Posterior density of each mixing weight (a histogram per component).

    A component whose draws do not vary is drawn as a vertical line; when no weight varies
    (the draws of a MAP fit's point estimate) the plot says so in its title instead of
    calling it a posterior.

    Args:
        idata: ``InferenceData`` whose posterior has ``weights`` (chain, draw, component).
        ax: axes to draw on; default a new figure's.

    Returns:
        the axes.

    Raises:
        ValueError: ``idata`` has no posterior ``weights``.

    Example:
        >>> import pyrogen
        >>> from pyrogen.diagnostics import plot_weights_posterior, to_inference_data
        >>> x = pyrogen.data.old_faithful()
        >>> gmm = pyrogen.GaussianMixture(2, inference="variational")
        >>> result = pyrogen.fit(gmm, x, steps=40, progress=False)
        >>> ax = plot_weights_posterior(to_inference_data(result, x, num_samples=200))
    """
    posterior = getattr(idata, "posterior", None)
    if posterior is None or WEIGHTS not in posterior:
        raise ValueError(
            f"idata: expected a posterior group with a {WEIGHTS!r} variable, got "
            f"{'no posterior' if posterior is None else sorted(posterior.data_vars)}"
        )
    weights = posterior[WEIGHTS].values  # (chain, draw, K)
    draws = weights.reshape(-1, weights.shape[-1])
    ax = _axes(ax)
    bins = np.linspace(draws.min(), draws.max(), 40) if np.ptp(draws) > 0 else 10
    for k in range(draws.shape[1]):
        values = draws[:, k]
        spread = f" ± {values.std():.3f}" if np.ptp(draws) > 0 else ""
        label = f"component {k}: {values.mean():.3f}{spread}"
        if np.ptp(values) > 0:
            ax.hist(
                values,
                bins=bins,
                density=True,
                histtype="stepfilled",
                alpha=0.45,
                color=f"C{k % 10}",
                label=label,
            )
        else:
            ax.axvline(values[0], color=f"C{k % 10}", linewidth=2, label=label)
    ax.set_xlabel("mixing weight")
    if np.ptp(draws) > 0:
        ax.set_ylabel("posterior density")
        ax.set_title(f"posterior of the weights ({draws.shape[0]} draws)")
    else:  # every draw is the same: a MAP fit's point estimate, not a posterior
        ax.set_yticks([])
        ax.set_title("point estimate of the weights (no posterior spread)")
    ax.legend(loc="best", fontsize="small")
    return ax


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
        >>> from pyrogen.diagnostics.plots import plot_completions
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
        >>> from pyrogen.diagnostics.plots import plot_class_samples
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


def reports(model: Any, plot: str) -> bool:
    """Whether ``model`` follows the model contract and reports ``plot`` (a file stem of
    ``model.report_plots``, e.g. ``"reconstructions"``): the plots drawn from methods only
    some families have (``reconstruct``, ``encode``, ``complete``, ``mixture_parameters``)
    ask this first."""
    return isinstance(model, GenerativeModel) and plot in model.report_plots


def _first_labels(y: Any, count: int, model: GenerativeModel) -> torch.Tensor:
    """The labels of the first ``count`` examples, on the model's device."""
    labels = torch.as_tensor(np.asarray(y.detach().cpu() if torch.is_tensor(y) else y))
    return labels.reshape(-1)[:count].to(model.device)


def _as_float_tensor(x: Any) -> torch.Tensor:
    return as_tensor(x, name="x", ndim=None, dtype=float_dtype_of(x))


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


def _running_mean_window(n_steps: int) -> int:
    """About 2% of the steps, at least 5, and at most a quarter of them (1: no running mean)."""
    return max(
        1, min(n_steps // 4, max(_MIN_RUNNING_MEAN, round(n_steps * _RUNNING_MEAN_FRACTION)))
    )


def _losses(source: Any) -> tuple[np.ndarray, str | None]:
    """Per-step losses as a float array, and what they are when known (the title)."""
    if isinstance(source, FitResult):
        bound = source.model.training_objective.split(", nats")[0]
        losses = np.asarray(source.losses, dtype=float)
    else:
        if isinstance(source, torch.Tensor):
            source = source.detach().cpu().numpy()
        try:
            losses, bound = np.asarray(source, dtype=float).reshape(-1), None
        except (TypeError, ValueError) as error:
            raise TypeError(
                f"result_or_losses: expected a FitResult or a sequence of numbers, "
                f"got {type(source).__name__}"
            ) from error
    if losses.size == 0:
        raise ValueError("result_or_losses: expected at least one loss, got none")
    bad = ~np.isfinite(losses)
    if bad.any():
        step = int(bad.argmax())
        raise ValueError(
            f"result_or_losses: expected finite losses, got {losses[step]} at step {step}"
        )
    return losses, bound


def _axes(ax: Axes | None) -> Axes:
    if ax is not None:
        if not isinstance(ax, Axes):
            raise TypeError(f"ax: expected matplotlib Axes or None, got {type(ax).__name__}")
        return ax
    # pyplot only when no axes are given, so callers with their own figures (run reports)
    # never touch pyplot's global state.
    import matplotlib.pyplot as plt

    return plt.subplots()[1]


def _check_dims(dims: Any, n_features: int) -> tuple[int, int]:
    if n_features < 2:
        raise ValueError(f"x: expected at least 2 features to plot, got {n_features}")
    valid = (
        isinstance(dims, (tuple, list))
        and len(dims) == 2
        and all(isinstance(d, int) and not isinstance(d, bool) for d in dims)
    )
    if not valid:
        raise ValueError(f"dims: expected two feature indices, got {dims!r}")
    first, second = dims
    if not (0 <= first < n_features and 0 <= second < n_features) or first == second:
        raise ValueError(
            f"dims: expected two different indices in [0, {n_features}), got {tuple(dims)}"
        )
    return first, second
