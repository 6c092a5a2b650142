"""Out-of-distribution detection from a model's likelihood, for every family that reports
one or a bound (mixture, flow, autoregressive, naive Bayes, VAE through its
importance-weighted bound, diffusion through its ELBO, energy-based through its estimate of
log Z): scores, the metrics that compare them, and their histograms.

Every score is higher for inputs more out-of-distribution and asks the model only through
its contract (``score_examples``, ``values_per_example``, ``score_descriptions``):

- :func:`negative_log_likelihood`: -log p(x) / D, nats per value;
- :func:`typicality_score` and :class:`TypicalityTest`: distance from the typical
  -log p(x) / D, per example or per batch with a bootstrap threshold (Nalisnick et al. 2019);
- :func:`likelihood_ratio` against a background model fitted on perturbed inputs
  (:func:`fit_background`, :func:`perturb`; Ren et al. 2019);
- :func:`complexity_score`: -log2 p(x) / D less a lossless compressor's code length
  :func:`code_length` (Serra et al. 2020).

Metrics: :func:`auroc`, :func:`aupr`, :func:`fpr_at_tpr` (as scikit-learn computes them),
:func:`ood_metrics` (the three for in- against out-of-distribution scores),
:func:`rejection_curve` (a classifier's accuracy as it abstains), :func:`ood_report` and
:func:`format_report` (several scores at once, as ``pyrogen evaluate --ood-data`` prints),
:func:`plot_ood_scores`. See ``docs/ood.rst`` for what each score assumes and when it fails.
"""

from __future__ import annotations

from pyrogen.ood.background import fit_background, likelihood_ratio, perturb
from pyrogen.ood.complexity import COMPRESSORS, code_length, complexity_score
from pyrogen.ood.metrics import aupr, auroc, fpr_at_tpr, ood_metrics, rejection_curve
from pyrogen.ood.plots import plot_ood_scores
from pyrogen.ood.report import SCORES, format_report, ood_report
from pyrogen.ood.scores import (
    TypicalityTest,
    check_likelihood,
    describe_score,
    negative_log_likelihood,
    typicality_score,
)

__all__ = [
    "COMPRESSORS",
    "SCORES",
    "TypicalityTest",
    "aupr",
    "auroc",
    "check_likelihood",
    "code_length",
    "complexity_score",
    "describe_score",
    "fit_background",
    "format_report",
    "fpr_at_tpr",
    "likelihood_ratio",
    "negative_log_likelihood",
    "ood_metrics",
    "ood_report",
    "perturb",
    "plot_ood_scores",
    "rejection_curve",
    "typicality_score",
]
