"""pyrogen: generative models as first-class Pyro model/guide pairs."""

__version__ = "0.1.0"

from pyrogen import data  # noqa: E402
from pyrogen.diagnostics import to_inference_data  # noqa: E402
from pyrogen.infer import FitResult, fit  # noqa: E402
from pyrogen.models import REGISTRY, VAE, GaussianMixture, load, select_n_components  # noqa: E402

__all__ = [
    "REGISTRY",
    "FitResult",
    "GaussianMixture",
    "data",
    "fit",
    "load",
    "select_n_components",
    "to_inference_data",
    "VAE",
]
