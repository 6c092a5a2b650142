"""pyrogen: generative models as first-class Pyro model/guide pairs."""

from pyrogen import data, ood
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
    GAN,
    REGISTRY,
    VAE,
    AutoregressiveDensity,
    BayesClassifier,
    ConditionalVAE,
    DiffusionVAE,
    EnergyDensity,
    FlowDensity,
    FlowGAN,
    GaussianMixture,
    GaussianMixtureVAE,
    LogisticRegression,
    NaiveBayes,
    NoiseConditionalClassifier,
    SemiSupervisedVAE,
    load,
)
from pyrogen.version import __version__

__all__ = [
    "REGISTRY",
    "AutoFlow",
    "AutoregressiveDensity",
    "BayesClassifier",
    "ConditionalVAE",
    "DiffusionVAE",
    "EnergyDensity",
    "FitResult",
    "FlowDensity",
    "FlowGAN",
    "GAN",
    "GaussianMixture",
    "GaussianMixtureVAE",
    "LogisticRegression",
    "MetricsLogger",
    "NaiveBayes",
    "NoiseConditionalClassifier",
    "SemiSupervisedVAE",
    "__version__",
    "data",
    "fit",
    "from_pyro",
    "load",
    "mixture_nuts",
    "neutra",
    "ood",
    "select_n_components",
    "to_inference_data",
    "VAE",
]
