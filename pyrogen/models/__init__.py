"""Model families, one per module, and the registry the CLI, tests and docs loop over."""

from __future__ import annotations

from pyrogen.models.autoregressive import AutoregressiveDensity
from pyrogen.models.base import DATA_PLATE, GenerativeModel, data_plate, load
from pyrogen.models.bayes_classifier import BayesClassifier
from pyrogen.models.conditional_vae import ConditionalVAE
from pyrogen.models.diffusion import DiffusionVAE
from pyrogen.models.energy import EnergyDensity
from pyrogen.models.flow import FlowDensity
from pyrogen.models.flow_gan import FlowGAN
from pyrogen.models.gan import GAN
from pyrogen.models.gmm import GaussianMixture
from pyrogen.models.logistic_regression import LogisticRegression
from pyrogen.models.mixture_vae import GaussianMixtureVAE
from pyrogen.models.naive_bayes import NaiveBayes
from pyrogen.models.noise_classifier import NoiseConditionalClassifier
from pyrogen.models.semisupervised_vae import SemiSupervisedVAE
from pyrogen.models.vae import VAE

#: family name -> class; the one list of families.
REGISTRY: dict[str, type[GenerativeModel]] = {
    model.family: model
    for model in (
        GaussianMixture,
        VAE,
        ConditionalVAE,
        SemiSupervisedVAE,
        GaussianMixtureVAE,
        FlowDensity,
        FlowGAN,
        EnergyDensity,
        DiffusionVAE,
        AutoregressiveDensity,
        GAN,
        NaiveBayes,
        LogisticRegression,
        NoiseConditionalClassifier,
    )
}

__all__ = [
    "BayesClassifier",
    "DATA_PLATE",
    "REGISTRY",
    "AutoregressiveDensity",
    "ConditionalVAE",
    "DiffusionVAE",
    "EnergyDensity",
    "FlowDensity",
    "FlowGAN",
    "GAN",
    "GaussianMixture",
    "GaussianMixtureVAE",
    "GenerativeModel",
    "LogisticRegression",
    "NaiveBayes",
    "NoiseConditionalClassifier",
    "SemiSupervisedVAE",
    "VAE",
    "data_plate",
    "load",
]
