"""Inference: the SVI engine (:func:`fit`) and its callbacks, collapsed NUTS
(:func:`run_nuts`), NUTS preconditioned by a flow guide (:func:`neutra`), the mixture's
workflows (:func:`select_n_components`, :func:`mixture_nuts`) and the ArviZ conversion of
posterior draws (:func:`to_inference_data`)."""

from pyrogen.infer.callbacks import Callback, MetricsLogger
from pyrogen.infer.checkpointing import TrainingInterrupted
from pyrogen.infer.engine import FitResult, fit
from pyrogen.infer.fit_options import FitConfig
from pyrogen.infer.inference_data import to_inference_data
from pyrogen.infer.mcmc import run_nuts
from pyrogen.infer.mixtures import fit_mixture, mixture_nuts, select_n_components
from pyrogen.infer.neutra import neutra

__all__ = [
    "Callback",
    "FitConfig",
    "FitResult",
    "MetricsLogger",
    "fit",
    "fit_mixture",
    "mixture_nuts",
    "neutra",
    "run_nuts",
    "select_n_components",
    "to_inference_data",
    "TrainingInterrupted",
]
