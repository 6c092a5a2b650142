"""Diagnostics: ArviZ conversion (SVI and MCMC), plots, held-out scores, run reports and
metrics against known answers.

Modules: :mod:`~pyrogen.diagnostics.scoring` (:func:`score`, :func:`summarize`),
:mod:`~pyrogen.diagnostics.report` (:func:`write_run`: a run folder),
:mod:`~pyrogen.diagnostics.run_plots` (which plots a run draws, keyed by
``model.report_plots``), :mod:`~pyrogen.diagnostics.plots` and
:mod:`~pyrogen.diagnostics.image_plots` (each plot),
:mod:`~pyrogen.diagnostics.text` (run summaries as text),
:mod:`~pyrogen.diagnostics.metrics`, :mod:`~pyrogen.diagnostics.sample_tests` (samples
against data without a likelihood), :mod:`~pyrogen.diagnostics.inference_data` and
:mod:`~pyrogen.diagnostics.pyro_models` (ArviZ). Everything here knows a model only
through the model contract, :class:`~pyrogen.models.GenerativeModel`.
"""

from __future__ import annotations

from pyrogen.diagnostics.image_plots import (
    image_shape,
    plot_class_samples,
    plot_completions,
    plot_image_grid,
    plot_latent,
    plot_reconstructions,
)
from pyrogen.diagnostics.inference_data import to_inference_data
from pyrogen.diagnostics.learning_curves import LearningCurve, learning_curve
from pyrogen.diagnostics.metrics import clustering_accuracy, confusion_matrix
from pyrogen.diagnostics.plots import (
    plot_clusters,
    plot_elbo,
    plot_energy_landscape,
    plot_weights_posterior,
)
from pyrogen.diagnostics.pyro_models import from_pyro
from pyrogen.diagnostics.report import write_run
from pyrogen.diagnostics.run_plots import figure_writer
from pyrogen.diagnostics.sample_tests import mmd_test, mode_coverage, nearest_neighbour_test
from pyrogen.diagnostics.scoring import reduce_scores, score, summarize

__all__ = [
    "LearningCurve",
    "clustering_accuracy",
    "confusion_matrix",
    "figure_writer",
    "mmd_test",
    "mode_coverage",
    "nearest_neighbour_test",
    "from_pyro",
    "image_shape",
    "learning_curve",
    "plot_class_samples",
    "plot_clusters",
    "plot_completions",
    "plot_elbo",
    "plot_energy_landscape",
    "plot_image_grid",
    "plot_latent",
    "plot_reconstructions",
    "plot_weights_posterior",
    "reduce_scores",
    "score",
    "summarize",
    "to_inference_data",
    "write_run",
]
