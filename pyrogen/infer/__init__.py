"""Inference: the SVI engine (:func:`fit`) and collapsed NUTS (:func:`run_nuts`)."""

from pyrogen.infer.engine import FitResult, fit

__all__ = ["FitResult", "fit"]
