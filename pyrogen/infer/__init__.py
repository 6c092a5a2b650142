"""Inference: the SVI engine (:func:`fit`) and its callbacks, collapsed NUTS
(:func:`run_nuts`) and NUTS preconditioned by a flow guide (:func:`neutra`)."""

from pyrogen.infer.callbacks import Callback, MetricsLogger
from pyrogen.infer.engine import FitConfig, FitResult, dynamic_binarization, fit

__all__ = ["Callback", "FitConfig", "FitResult", "MetricsLogger", "dynamic_binarization", "fit"]
from pyrogen.infer.mcmc import run_nuts  # noqa: E402

__all__ += ["run_nuts"]
from pyrogen.infer.neutra import neutra  # noqa: E402

__all__ += ["neutra"]
