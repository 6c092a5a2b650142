"""Inference: the SVI engine (:func:`fit`), collapsed NUTS (:func:`run_nuts`) and NUTS
preconditioned by a flow guide (:func:`neutra`)."""

from pyrogen.infer.engine import FitResult, fit

__all__ = ["FitResult", "fit"]
from pyrogen.infer.mcmc import run_nuts  # noqa: E402

__all__ += ["run_nuts"]
from pyrogen.infer.neutra import neutra  # noqa: E402

__all__ += ["neutra"]
