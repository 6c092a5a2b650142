"""Diagnostics: ArviZ conversion (SVI and MCMC), plots, held-out scores, run reports and
metrics against known answers."""

from __future__ import annotations

from pyrogen.diagnostics.inference_data import to_inference_data
from pyrogen.diagnostics.metrics import clustering_accuracy
from pyrogen.diagnostics.plots import (
    image_shape,
    plot_class_samples,
    plot_clusters,
    plot_completions,
    plot_elbo,
    plot_image_grid,
    plot_latent,
    plot_reconstructions,
    plot_weights_posterior,
)
from pyrogen.diagnostics.pyro_models import from_pyro
from pyrogen.diagnostics.report import figure_writer, score, summarize, write_run

__all__ = [
    "clustering_accuracy",
    "figure_writer",
    "from_pyro",
    "image_shape",
    "plot_class_samples",
    "plot_clusters",
    "plot_completions",
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
