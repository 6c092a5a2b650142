"""Shared set-up for the diagnostics tests: headless plots, small data, fitted mixtures."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # before pyplot is imported anywhere: no display in tests

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import pyrogen  # noqa: E402


@pytest.fixture(autouse=True)
def no_open_figures():
    """Figures opened by a test are closed after it."""
    yield
    plt.close("all")


@pytest.fixture
def two_clusters() -> torch.Tensor:
    """60 rows in 2-D: two well separated clusters of 30 rows, different spreads."""
    generator = torch.Generator().manual_seed(0)
    left = torch.randn(30, 2, generator=generator) + torch.tensor([-3.0, 0.0])
    right = 0.5 * torch.randn(30, 2, generator=generator) + torch.tensor([3.0, 1.0])
    return torch.cat([left, right])


@pytest.fixture
def fit_gmm(two_clusters):
    """Factory: a 2-component mixture fitted for a few steps, and its FitResult."""

    def make(covariance: str = "full", inference: str = "map", steps: int = 30):
        model = pyrogen.GaussianMixture(2, covariance, inference)
        result = pyrogen.fit(model, two_clusters, steps=steps, progress=False)
        return model, result

    return make


@pytest.fixture
def variant():
    """Factory: a small model of a VAE family on 16 values (4 x 4 "images"), seeded."""

    def make(cls, **options):
        torch.manual_seed(0)
        return cls((16,), latent_dim=2, hidden=(8,), **options)

    return make


@pytest.fixture
def binary_rows() -> tuple[torch.Tensor, torch.Tensor]:
    """40 binary 4 x 4 "images" and labels 0..2."""
    x = (torch.rand(40, 16, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    return x, torch.arange(40) % 3


@pytest.fixture
def fitted_vae():
    """A small VAE on 4 x 4 "images", fitted for a few steps, and held-out rows."""
    generator = torch.Generator().manual_seed(0)
    x = (torch.rand(80, 16, generator=generator) > 0.5).float()
    torch.manual_seed(0)
    vae = pyrogen.VAE((16,), latent_dim=2, hidden=(8,))
    result = pyrogen.fit(vae, x[:60], steps=5, batch_size=20, progress=False)
    return vae, result, x[:60], x[60:]
