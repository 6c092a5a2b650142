"""Diagnostics: ArviZ conversion (SVI and MCMC), plots, held-out scores and run reports."""

from __future__ import annotations

from pyrogen.diagnostics.inference_data import to_inference_data
from pyrogen.diagnostics.plots import (
    image_shape,
    plot_clusters,
    plot_elbo,
    plot_image_grid,
    plot_latent,
    plot_reconstructions,
    plot_weights_posterior,
)
from pyrogen.diagnostics.report import figure_writer, score, summarize, write_run

__all__ = [
    "figure_writer",
    "image_shape",
    "plot_clusters",
    "plot_elbo",
    "plot_image_grid",
    "plot_latent",
    "plot_reconstructions",
    "plot_weights_posterior",
    "score",
    "summarize",
    "to_inference_data",
    "write_run",
]
