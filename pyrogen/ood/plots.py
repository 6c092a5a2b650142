"""Histograms of an out-of-distribution score on in-distribution rows and on each set of
out-of-distribution rows, on one axis: how far apart (or how reversed) they are."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from matplotlib.axes import Axes

from pyrogen.checks import check_int
from pyrogen.ood.metrics import ood_metrics

__all__ = ["plot_ood_scores"]


def plot_ood_scores(
    in_scores: Any,
    out_scores: Mapping[str, Any],
    ax: Axes | None = None,
    *,
    bins: int = 40,
    in_label: str = "in-distribution",
    xlabel: str = "OOD score (higher = more out-of-distribution)",
) -> Axes:
    """Density histograms of ``in_scores`` (N,) and of each of ``out_scores`` (name ->
    (M,)) on shared bins, each out-of-distribution set labelled with its AUROC.

    Args:
        in_scores: scores of in-distribution rows (N,).
        out_scores: name -> scores of out-of-distribution rows (M,).
        ax: the axes to draw on (a new figure's otherwise).
        bins: histogram bins over the range of all scores.
        in_label: the legend's name of the in-distribution rows.
        xlabel: the x axis's label (say which score and its units).

    Returns:
        the axes.
    """
    check_int("bins", bins)
    if not isinstance(out_scores, Mapping) or not out_scores:
        raise ValueError("out_scores: expected a non-empty mapping of name -> scores")
    inside = _values(in_scores)
    outside = {name: _values(values) for name, values in out_scores.items()}
    edges = np.histogram_bin_edges(np.concatenate([inside, *outside.values()]), bins=bins)
    ax = _axes(ax)
    style = {"bins": edges, "density": True, "histtype": "stepfilled", "alpha": 0.45}
    ax.hist(inside, label=f"{in_label} ({len(inside)})", **style)
    for name, values in outside.items():
        auroc = ood_metrics(inside, values)["auroc"]
        ax.hist(values, label=f"{name} ({len(values)}, AUROC {auroc:.3f})", **style)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    ax.legend(frameon=False, fontsize="small")
    return ax


def _values(scores: Any) -> np.ndarray:
    if isinstance(scores, torch.Tensor):
        scores = scores.detach().cpu().double().numpy()
    return np.asarray(scores, dtype=np.float64).reshape(-1)


def _axes(ax: Axes | None) -> Axes:
    if ax is not None:
        if not isinstance(ax, Axes):
            raise TypeError(f"ax: expected matplotlib Axes or None, got {type(ax).__name__}")
        return ax
    import matplotlib.pyplot as plt  # pyplot only when no axes are given

    return plt.subplots()[1]
