"""The quadrature objective: exact maximum likelihood for energy models with D <= 3, checked
against a Gaussian energy's closed-form negative log-likelihood and its gradient."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import pyrogen
from pyrogen.models.energy_objectives import QuadratureMaximumLikelihood


class DiagonalGaussianEnergy(nn.Module):
    """E(u) = sum ((u - m) / s)^2 / 2 with learnable m and log s (D,), float64."""

    def __init__(self, dims: int) -> None:
        super().__init__()
        self.mean = nn.Parameter(torch.linspace(-0.3, 0.3, dims, dtype=torch.float64))
        self.log_sd = nn.Parameter(torch.linspace(-0.6, -0.3, dims, dtype=torch.float64))

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return 0.5 * (((u - self.mean) / self.log_sd.exp()) ** 2).sum(-1)

    def negative_log_likelihood(self, x: torch.Tensor) -> torch.Tensor:
        normal = torch.distributions.Normal(self.mean, self.log_sd.exp())
        return -normal.log_prob(x).sum()


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_loss_and_gradient_are_the_exact_negative_log_likelihood(dims):
    torch.manual_seed(0)
    energy = DiagonalGaussianEnergy(dims)
    model = pyrogen.EnergyDensity(dims, energy, objective="quadrature", confinement=None)
    model.double()
    x = torch.randn(7, dims, dtype=torch.float64)
    loss = model.loss.differentiable_loss(model.model, model.guide, x, num_data=70)
    # A Gaussian of sd 0.55-0.74 centred within 0.3 of 0, on [-6, 6]^D with spacing 0.5 or
    # finer at any shift: the grid's error is of order exp(-2 pi^2 sd^2 / h^2) < 1e-10 and
    # the box cuts off mass beyond 7.7 sd (< 1e-13), so value and gradient are exact.
    exact = 10 * energy.negative_log_likelihood(x)
    assert isinstance(model.loss, QuadratureMaximumLikelihood)
    assert loss.item() == pytest.approx(exact.item(), rel=1e-9)
    gradient = torch.autograd.grad(loss, [energy.mean, energy.log_sd])
    expected = torch.autograd.grad(exact, [energy.mean, energy.log_sd])
    for got, want in zip(gradient, expected, strict=True):
        assert torch.allclose(got, want, rtol=1e-8, atol=1e-10)


def test_training_grid_is_shifted_at_random_and_unbiased():
    torch.manual_seed(0)
    model = pyrogen.EnergyDensity(1, objective="quadrature", hidden=(8,), grid_points=16)
    with torch.no_grad():
        estimates = torch.stack([model.training_log_partition() for _ in range(400)])
    assert estimates.std() > 0  # a fresh shift each call
    # A spacing of 0.75 under a density of width ~1: each sum is off by a few percent, but
    # their mean is Z over the box (randomized quadrature is unbiased); 400 draws put it
    # within about 0.1% of the fine grid's Z over the same box, [-6, 6].
    exact = model.log_partition("quadrature", bound=6.0).log_z
    assert math.log(estimates.exp().mean()) == pytest.approx(exact, abs=0.01)


def test_fit_recovers_a_gaussian():
    generator = torch.Generator().manual_seed(0)
    x = 2.0 + 0.5 * torch.randn(400, 1, generator=generator)
    model = pyrogen.EnergyDensity(1, objective="quadrature", hidden=(16,), grid_points=256)
    pyrogen.fit(model, x, steps=150, lr=1e-2, seed=0, progress=False)
    u = torch.linspace(-8, 8, 4001).unsqueeze(-1)
    with torch.no_grad():
        weights = torch.softmax(-model.standardized_energy(u), 0)
    grid = (model.data_shift + model.data_scale * u).squeeze(-1)
    mean = weights @ grid
    variance = weights @ (grid - mean) ** 2
    # Maximum likelihood of a Gaussian is the sample's mean and variance. Measured after 150
    # steps: mean off by 0.002, variance by 2%; the bounds (0.05 = 2 standard errors of the
    # mean of 400 rows, 10%) leave room for other seeds and platforms.
    assert mean.item() == pytest.approx(x.mean().item(), abs=0.05)
    assert variance.item() == pytest.approx(x.var().item(), rel=0.1)
    assert model.training_objective == (
        "QuadratureMaximumLikelihood loss (not an ELBO), nats per example"
    )


def test_more_than_three_values_are_refused():
    with pytest.raises(ValueError, match="objective: expected data of at most 3 values"):
        pyrogen.EnergyDensity(4, objective="quadrature")
    with pytest.raises(ValueError, match="grid_points: expected a positive integer"):
        pyrogen.EnergyDensity(2, objective="quadrature", grid_points=0)
