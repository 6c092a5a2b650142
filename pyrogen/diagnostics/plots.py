"""Plots of a fit: the loss curve, mixture clusters with covariance ellipses, the posterior
of the mixing weights, a 2-D sample scatter and an energy landscape (image models' plots are
in :mod:`~pyrogen.diagnostics.image_plots`).

Every function draws on the ``ax`` it is given (a new figure's axes otherwise) and returns
it, so plots compose into the caller's figures and into run reports.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import arviz
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


def reports(model: Any, plot: str) -> bool:
    """Whether ``model`` follows the model contract and reports ``plot`` (a file stem of
    ``model.report_plots``, e.g. ``"reconstructions"``): the plots drawn from methods only
    some families have (``reconstruct``, ``encode``, ``complete``, ``mixture_parameters``)
    ask this first."""
    return isinstance(model, GenerativeModel) and plot in model.report_plots


def _as_float_tensor(x: Any) -> torch.Tensor:
    return as_tensor(x, name="x", ndim=None, dtype=float_dtype_of(x))


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
