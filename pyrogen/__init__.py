"""pyrogen: generative models as first-class Pyro model/guide pairs."""

from pyrogen import data
from pyrogen.diagnostics import from_pyro
from pyrogen.guides import AutoFlow
from pyrogen.infer import (
    FitResult,
    MetricsLogger,
    fit,
    mixture_nuts,
    neutra,
    select_n_components,
    to_inference_data,
)
from pyrogen.models import (
    REGISTRY,
    VAE,
    AutoregressiveDensity,
    ConditionalVAE,
    DiffusionVAE,
    EnergyDensity,
    FlowDensity,
    GaussianMixture,
    GaussianMixtureVAE,
    NaiveBayes,
    SemiSupervisedVAE,
    load,
)
from pyrogen.version import __version__

__all__ = [
    "REGISTRY",
    "AutoFlow",
    "AutoregressiveDensity",
    "ConditionalVAE",
    "DiffusionVAE",
    "EnergyDensity",
    "FitResult",
    "FlowDensity",
    "GaussianMixture",
    "GaussianMixtureVAE",
    "MetricsLogger",
    "NaiveBayes",
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
