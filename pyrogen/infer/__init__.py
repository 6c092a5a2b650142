"""Inference: the SVI engine (:func:`fit`) and collapsed NUTS (:func:`run_nuts`)."""

from pyrogen.infer.engine import FitResult, fit

__all__ = ["FitResult", "fit"]
from pyrogen.infer.mcmc import run_nuts  # noqa: E402

__all__ += ["run_nuts"]
