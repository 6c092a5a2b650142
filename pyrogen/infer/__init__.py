"""Inference: the SVI engine (:func:`fit`) and its callbacks, collapsed NUTS
(:func:`run_nuts`) and NUTS preconditioned by a flow guide (:func:`neutra`)."""

from pyrogen.infer.callbacks import Callback, MetricsLogger
from pyrogen.infer.engine import FitConfig, FitResult, fit

__all__ = ["Callback", "FitConfig", "FitResult", "MetricsLogger", "fit"]
from pyrogen.infer.mcmc import run_nuts  # noqa: E402

__all__ += ["run_nuts"]
from pyrogen.infer.neutra import neutra  # noqa: E402

__all__ += ["neutra"]
from pyrogen.infer.inference_data import to_inference_data  # noqa: E402
from pyrogen.infer.mixtures import mixture_nuts, select_n_components  # noqa: E402

__all__ += ["mixture_nuts", "select_n_components", "to_inference_data"]
