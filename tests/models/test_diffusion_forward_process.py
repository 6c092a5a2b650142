"""The step posterior's closed-form KL against float64 references of the generic Gaussian KL,
its fallback, and the diffusion ELBO's terms read through it."""

from __future__ import annotations

import pytest
import torch
from pyro import poutine
from torch.distributions.kl import _kl_normal_normal

from pyrogen.models.diffusion import DiffusionVAE
from pyrogen.models.forward_process import (
    ForwardPosterior,
    level_tables,
    noise_levels,
    step_levels,
)
from pyrogen.models.objectives import SampledSteps, analytic_kl_terms
from pyrogen.nn.schedules import NoiseSchedule


def _generic_kl64(gamma, t, z_t, x, x_hat) -> torch.Tensor:
    """KL(q(z_s | z_t, x) || q(z_s | z_t, x_hat)) per row in float64, as the generic Normal
    KL of the posteriors written from alpha and sigma (Ho et al. 2020, eq. 7)."""
    gamma = gamma.detach().double()
    _, alpha_t, sigma_t = noise_levels(gamma, t, gamma, 1)
    _, alpha_s, sigma_s = noise_levels(gamma, t - 1, gamma, 1)
    alpha_ts = alpha_t / alpha_s
    sigma2_ts = sigma_t**2 - alpha_ts**2 * sigma_s**2
    scale = (sigma2_ts * sigma_s**2 / sigma_t**2).sqrt().expand(z_t.shape)

    def posterior(given):
        loc = alpha_ts * sigma_s**2 * z_t.double() + alpha_s * sigma2_ts * given.double()
        return torch.distributions.Normal(loc / sigma_t**2, scale)

    return torch.distributions.kl_divergence(posterior(x), posterior(x_hat)).sum(-1)


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_closed_form_kl_is_the_float64_gaussian_kl_at_every_level(kind):
    """In float32 the closed form (SNR_{t-1} - SNR_t) / 2 ||x - x_hat||^2 is within 1e-6 of
    the float64 Gaussian KL at every t = 1..1000; the generic float32 KL of the same two
    posteriors (their means share the large z_t term) was off by up to 10% (linear) and
    100% (cosine) at some levels, 1e-5 to 6e-5 at the median level."""
    T = 1000
    gamma = NoiseSchedule(kind, T)()
    t = torch.arange(1, T + 1)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(T, 2, generator=generator)
    x_hat = x + 0.3 * torch.randn(T, 2, generator=generator)
    _, alpha, sigma = noise_levels(gamma, t, x, 1)
    z_t = alpha * x + sigma * torch.randn(T, 2, generator=generator)
    levels = step_levels(level_tables(gamma, torch.float32, "schedule"), t, 1)
    q, p = ForwardPosterior(z_t, x, levels), ForwardPosterior(z_t, x_hat, levels)
    kl = torch.distributions.kl_divergence(q, p).sum(-1)
    reference = _generic_kl64(gamma, t, z_t, x, x_hat)
    assert kl.dtype == torch.float32
    torch.testing.assert_close(kl.double(), reference, rtol=1e-6, atol=0)
    # the generic form on the same float32 posteriors is far off somewhere (as before)
    generic = _kl_normal_normal(q, p).sum(-1).double()
    assert ((generic - reference) / reference).abs().max() > 1e-3


def test_kl_falls_back_to_the_normal_kl_unless_z_t_and_levels_are_shared():
    gamma = NoiseSchedule("cosine", 10)()
    t = torch.tensor([3, 7])
    z_t, x, x_hat = torch.randn(3, 2, 1).unbind(0)
    tables = level_tables(gamma, torch.float32, "schedule")
    levels = step_levels(tables, t, 1)
    same_t_other_object = step_levels(tables, t.clone(), 1)
    q = ForwardPosterior(z_t, x, levels)
    for p in (
        ForwardPosterior(z_t.clone(), x_hat, levels),  # another z_t
        ForwardPosterior(z_t, x_hat, same_t_other_object),  # levels not known to be shared
    ):
        kl = torch.distributions.kl_divergence(q, p)
        torch.testing.assert_close(kl, _kl_normal_normal(q, p), rtol=0, atol=0)
    # an expansion (as Pyro's plates make) keeps the closed form, broadcast
    expanded = q.expand((4, 2, 1))
    assert isinstance(expanded, ForwardPosterior) and expanded.z_t is z_t
    kl = torch.distributions.kl_divergence(expanded, ForwardPosterior(z_t, x_hat, levels))
    assert kl.shape == (4, 2, 1)
    torch.testing.assert_close(kl[2], 0.5 * levels.snr_drop * (x - x_hat) ** 2)


def test_elbo_terms_diffusion_is_the_float64_sum_of_the_step_kls():
    """``elbo_terms(exact=True)``'s diffusion term (float32) against the float64 Gaussian
    KLs at the same draws, read off the same traces: within 1e-6 relative per row."""
    T = 30
    torch.manual_seed(0)
    model = DiffusionVAE((2,), timesteps=T, schedule="cosine", hidden=(16,))
    x = torch.randn(8, 2) * 3
    model.setup(x)
    model.eval()
    torch.manual_seed(1)
    diffusion = model.elbo_terms(x, exact=True)["diffusion"]

    torch.manual_seed(1)  # the same draws, in the order _terms makes them
    reference = torch.zeros(8, dtype=torch.float64)
    for step in range(1, T + 1):
        with SampledSteps(lambda t: torch.ones_like(t, dtype=x.dtype), step=step):
            guide_trace = poutine.trace(model.guide).get_trace(x)
            model_trace = poutine.trace(poutine.replay(model.model, trace=guide_trace)).get_trace(x)
            terms = analytic_kl_terms(model_trace, guide_trace)
        q = guide_trace.nodes["z_step"]["fn"].base_dist
        p = model_trace.nodes["z_step"]["fn"].base_dist
        assert isinstance(q, ForwardPosterior) and q.z_t is p.z_t
        one = _generic_kl64(model.schedule(), q.levels.t, q.z_t, q.x, p.x.detach())
        torch.testing.assert_close(-terms["z_step"].double(), one, rtol=1e-6, atol=0)
        reference += one
    torch.testing.assert_close(diffusion.double(), reference, rtol=1e-6, atol=0)


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_simple_objective_weights_are_the_float64_ddpm_weights_at_every_level(prediction):
    """``"simple"``'s weight 1 / (SNR drop * c_t^2) turns the step KL into DDPM's unweighted
    squared error of the network's output; in float32 it is within 1e-6 of float64 at every
    level, 2e-7 at most (the SNR drop taken as exp(-gamma_s) - exp(-gamma_t) in float32, two
    nearly equal exponentials, was off by up to 6e-6)."""
    T = 1000
    model = DiffusionVAE((2,), T, objective="simple", prediction=prediction, hidden=(8,))
    t = torch.arange(1, T + 1)
    gamma = model.schedule().detach().double()
    snr_drop = torch.exp(-gamma[t - 1]) - torch.exp(-gamma[t])
    c2 = {"eps": torch.exp(gamma[t]), "x0": torch.ones(T).double(), "v": torch.sigmoid(gamma[t])}
    reference = 1 / (snr_drop * c2[prediction])
    weight = model._step_weight(t)
    assert weight.dtype == torch.float32
    torch.testing.assert_close(weight.double(), reference, rtol=1e-6, atol=0)
