"""FlowDensity: invertible, log-determinants equal autograd's, normalized, bounds, errors."""

from __future__ import annotations

import math

import pytest
import torch
from pyro.infer import Trace_ELBO

import pyrogen
from pyrogen import FlowDensity, ood
from pyrogen.nn.flows import FLOWS


def _trained_shift(model: FlowDensity, shift: float = 1.0, scale: float = 2.0) -> FlowDensity:
    model.data_shift.fill_(shift)
    model.data_scale.fill_(scale)
    with torch.no_grad():  # move the networks off their near-identity initialisation
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    return model


@pytest.mark.parametrize("flow", FLOWS)
@pytest.mark.parametrize("logit", [None, 0.05])
def test_invertible_and_log_determinant_equals_autograd(flow, logit):
    torch.manual_seed(0)
    model = _trained_shift(
        FlowDensity((3,), flow, transforms=2, hidden=(8,), logit=logit, standardize=True)
    ).double()
    density = model.density()
    x = torch.rand(5, 3, dtype=torch.float64) * 0.9 + 0.05
    z = density.transform(x)
    assert torch.allclose(density.transform.inv(z), x, atol=1e-8)
    # log p(x) = log N(T(x)) + log |det dT/dx|, with the Jacobian from autograd
    for row in x:
        jacobian = torch.autograd.functional.jacobian(density.transform, row)
        expected = (
            density.base.log_prob(density.transform(row)) + torch.linalg.slogdet(jacobian).logabsdet
        )
        assert density.log_prob(row).item() == pytest.approx(expected.item(), abs=1e-8)


def test_the_density_integrates_to_one_in_data_units():
    torch.manual_seed(0)
    model = _trained_shift(FlowDensity((2,), "nsf", transforms=2, hidden=(8,)), 1.0, 2.0)
    grid = torch.linspace(-14, 16, 601, dtype=torch.float64)
    step = (grid[1] - grid[0]).item()
    points = torch.cartesian_prod(grid, grid)
    model.double()
    mass = model.log_prob(points).exp().sum().item() * step**2
    assert mass == pytest.approx(1.0, abs=0.01)


def test_maximum_likelihood_reaches_the_true_density():
    generator = torch.Generator().manual_seed(0)
    cov = torch.tensor([[2.0, 1.2], [1.2, 1.0]])
    truth = torch.distributions.MultivariateNormal(torch.tensor([3.0, -1.0]), cov)
    tril = torch.linalg.cholesky(cov)
    x = truth.loc + torch.randn(2000, 2, generator=generator) @ tril.T
    test = truth.loc + torch.randn(2000, 2, generator=generator) @ tril.T
    model = FlowDensity((2,), "maf", transforms=2, hidden=(16,))
    pyrogen.fit(model, x, steps=800, batch_size=256, lr=3e-3, progress=False)
    # held-out mean log-likelihood within 0.05 nats of the true density's (the standard
    # error of that mean over 2000 rows is ~0.02)
    gap = truth.log_prob(test).mean() - model.log_prob(test).mean()
    assert abs(gap.item()) < 0.05


def test_dequantization_bound_is_pyros_elbo_and_the_iw_bound_is_tighter():
    generator = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (30, 1, 2, 2), generator=generator) / 255
    model = FlowDensity((1, 2, 2), "realnvp", transforms=2, hidden=(8,), dequantize=256)
    model = _trained_shift(model, 0.0, 1.0)
    torch.manual_seed(0)
    elbo = torch.stack([model.elbo(x) for _ in range(400)]).mean(0).sum().item()
    pyro_elbo = -Trace_ELBO(num_particles=400, vectorize_particles=True).loss(
        model.model, model.guide, x
    )
    assert pyro_elbo == pytest.approx(elbo, rel=1e-3)
    # the flow's density hardly changes within a bin 1/256 wide, so the importance-weighted
    # bound is barely above the ELBO (it is exactly above in expectation)
    assert model.log_likelihood(x, num_samples=200).mean() > elbo / 30 - 1e-3
    bits = model.bits_per_dim(x).mean().item()
    assert bits == pytest.approx(-elbo / 30 / (4 * math.log(2)), rel=0.05)


def test_conditional_flow_and_sampling():
    model = FlowDensity((2,), "nsf", transforms=2, hidden=(8,), num_classes=3)
    x = torch.randn(60, 2) + torch.arange(60).remainder(3)[:, None] * 4.0
    y = torch.arange(60) % 3
    pyrogen.fit(model, x, y, steps=300, lr=5e-3, progress=False)
    draws = model.sample(300, y=torch.full((300,), 2))
    assert draws.mean(0).sub(8.0).abs().max() < 1.5
    assert model.sample(4).shape == (4, 2)
    quantized = FlowDensity((4,), "maf", transforms=1, hidden=(8,), dequantize=4)
    levels = quantized.sample(50) * 3
    assert torch.equal(levels, levels.round()) and levels.min() >= 0 and levels.max() <= 3


def test_typicality_flags_data_that_are_too_likely_as_well_as_unlikely():
    torch.manual_seed(0)
    model = FlowDensity((2,), "maf", transforms=1, hidden=(8,))
    x = torch.randn(500, 2)
    pyrogen.fit(model, x, steps=300, lr=5e-3, progress=False)
    reference = torch.randn(500, 2)
    far, centre = torch.full((1, 2), 6.0), torch.zeros(1, 2)
    nll = ood.negative_log_likelihood
    assert nll(model, far) > nll(model, centre)  # -log p / D
    typical = ood.typicality_score(model, reference[:100], reference).mean()
    assert ood.typicality_score(model, centre, reference) > typical  # the mode is atypical


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="flow: expected one of"):
        FlowDensity((2,), "glow")
    with pytest.raises(ValueError, match="logit: expected a number in"):
        FlowDensity((2,), logit=0.7)
    with pytest.raises(ValueError, match="realnvp' couples halves"):
        FlowDensity((1,), "realnvp")
    model = FlowDensity((2,), transforms=1, hidden=(8,))
    with pytest.raises(ValueError, match=r"x: expected shape \(n, 2\), got \(3, 3\)"):
        model.log_prob(torch.zeros(3, 3))
    with pytest.raises(ValueError, match="y: this flow is not conditional"):
        model.log_prob(torch.zeros(3, 2), [0, 1, 2])
    quantized = FlowDensity((2,), transforms=1, hidden=(8,), dequantize=256)
    with pytest.raises(ValueError, match=r"expected values in \[0, 1\]"):
        pyrogen.fit(quantized, torch.full((4, 2), 3.0), steps=1, progress=False)
    with pytest.raises(ValueError, match="log_prob: quantized data have a probability"):
        quantized.log_prob(torch.zeros(3, 2))
    labelled = FlowDensity((2,), transforms=1, hidden=(8,), num_classes=2)
    with pytest.raises(ValueError, match=r"y: expected labels in 0..1, got 2 at row 0"):
        labelled.log_prob(torch.zeros(1, 2), [2])


def test_float32_dequantization_never_lands_outside_the_guides_box():
    x = (torch.arange(256.0) / 255).repeat(4, 1)  # every level, (4, 256)
    model = FlowDensity((256,), "maf", transforms=1, hidden=(8,), dequantize=256)
    # 10 x 500 x 1024 draws: before the fix about one loss in three was infinite here
    elbo = Trace_ELBO(num_particles=500, vectorize_particles=True, max_plate_nesting=1)
    assert all(math.isfinite(elbo.loss(model.model, model.guide, x)) for _ in range(10))


def test_importance_weighted_bound_is_the_same_in_chunks(monkeypatch):
    x = torch.randint(0, 256, (6, 3)) / 255
    model = FlowDensity((3,), "maf", transforms=1, hidden=(8,), dequantize=256)
    torch.manual_seed(0)
    whole = model.log_likelihood(x, num_samples=40)
    monkeypatch.setattr("pyrogen.models.flow._EVAL_ELEMENTS", 18 * 7)  # 7 samples at a time
    torch.manual_seed(0)
    assert torch.allclose(model.log_likelihood(x, num_samples=40), whole, atol=1e-5)
