"""pyrogen: generative models as first-class Pyro model/guide pairs."""

# First: modules below that still read the version from the package face find it set.
from pyrogen.version import __version__

# isort: split
from pyrogen import data
from pyrogen.diagnostics import from_pyro, to_inference_data
from pyrogen.guides import AutoFlow
from pyrogen.infer import FitResult, fit, neutra
from pyrogen.infer.mixtures import mixture_nuts, select_n_components
from pyrogen.models import (
    REGISTRY,
    VAE,
    ConditionalVAE,
    DiffusionVAE,
    FlowDensity,
    GaussianMixture,
    GaussianMixtureVAE,
    SemiSupervisedVAE,
    load,
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
    "__version__",
    "data",
    "fit",
    "from_pyro",
    "load",
    "mixture_nuts",
    "neutra",
    "select_n_components",
    "to_inference_data",
    "VAE",
]
