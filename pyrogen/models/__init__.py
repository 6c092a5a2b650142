"""Model families, one per module, and the registry the CLI, tests and docs loop over."""

from __future__ import annotations

from pyrogen.models.base import DATA_PLATE, GenerativeModel, data_plate, load
from pyrogen.models.gmm import GaussianMixture, select_n_components
from pyrogen.models.vae import VAE

#: family name -> class; the one list of families.
REGISTRY: dict[str, type[GenerativeModel]] = {
    GaussianMixture.family: GaussianMixture,
    VAE.family: VAE,
}

__all__ = [
    "DATA_PLATE",
    "REGISTRY",
    "GaussianMixture",
    "GenerativeModel",
    "data_plate",
    "load",
    "select_n_components",
    "VAE",
]
