"""pyrogen: generative models as first-class Pyro model/guide pairs."""

__version__ = "0.1.0"

from pyrogen import data  # noqa: E402
from pyrogen.diagnostics import from_pyro, to_inference_data  # noqa: E402
from pyrogen.guides import AutoFlow  # noqa: E402
from pyrogen.infer import FitResult, fit, neutra  # noqa: E402
from pyrogen.models import (  # noqa: E402
    REGISTRY,
    VAE,
    ConditionalVAE,
    DiffusionVAE,
    FlowDensity,
    GaussianMixture,
    GaussianMixtureVAE,
    SemiSupervisedVAE,
    load,
    select_n_components,
)

__all__ = [
    "REGISTRY",
    "AutoFlow",
    "ConditionalVAE",
    "DiffusionVAE",
    "FitResult",
    "FlowDensity",
    "GaussianMixture",
    "GaussianMixtureVAE",
    "SemiSupervisedVAE",
    "data",
    "fit",
    "from_pyro",
    "neutra",
    "load",
    "select_n_components",
    "to_inference_data",
    "VAE",
]
