"""Diagnostics: ArviZ conversion (SVI and MCMC), plots and run reports."""

from __future__ import annotations

from pyrogen.diagnostics.inference_data import to_inference_data
from pyrogen.diagnostics.plots import plot_clusters, plot_elbo, plot_weights_posterior
from pyrogen.diagnostics.report import summarize, write_run

__all__ = [
    "plot_clusters",
    "plot_elbo",
    "plot_weights_posterior",
    "summarize",
    "to_inference_data",
    "write_run",
]
