"""VAE: analytic against Monte Carlo KL, the bounds' order, beta, IWAE, bad input."""

from __future__ import annotations

import math

import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

import pyrogen
from pyrogen.models.objectives import AnalyticKLELBO, ImportanceWeightedELBO
from pyrogen.models.vae import VAE


def binary_data(n: int = 64, dim: int = 12, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    prototypes = (torch.rand(3, dim, generator=generator) > 0.5).float()
    rows = prototypes[torch.randint(3, (n,), generator=generator)]
    flips = torch.rand(n, dim, generator=generator) < 0.1
    return torch.where(flips, 1 - rows, rows)


def test_analytic_kl_equals_monte_carlo_kl():
    x = binary_data(8)
    vae = VAE((12,), latent_dim=3, hidden=(16,))
    loc, scale = vae.encode(x)
    posterior = torch.distributions.Normal(loc, scale)
    analytic = torch.distributions.kl_divergence(
        posterior, torch.distributions.Normal(0.0, 1.0)
    ).sum(-1)
    z = posterior.sample((200_000,))
    log_ratio = posterior.log_prob(z).sum(-1) - torch.distributions.Normal(0.0, 1.0).log_prob(
        z
    ).sum(-1)
    monte_carlo = log_ratio.mean(0)
    standard_error = log_ratio.std(0) / math.sqrt(z.shape[0])
    assert torch.all((monte_carlo - analytic).abs() < 5 * standard_error + 1e-4)


def test_mean_field_and_monte_carlo_elbos_agree_with_the_evaluation_elbo():
    x = binary_data(32)
    vae = VAE((12,), latent_dim=3, hidden=(16,), num_particles=1)
    evaluated = vae.elbo(x, num_samples=2000).sum().item()
    for elbo in (
        TraceMeanField_ELBO(num_particles=2000, vectorize_particles=True),
        Trace_ELBO(num_particles=2000, vectorize_particles=True),
    ):
        pyro_elbo = -elbo.loss(vae.model, vae.guide, x)
        assert pyro_elbo == pytest.approx(evaluated, rel=2e-3)


def test_iwae_with_one_particle_is_the_elbo_draw_for_draw():
    x = binary_data(16)
    vae = VAE((12,), latent_dim=3, hidden=(16,))
    pyro.set_rng_seed(5)
    iwae = ImportanceWeightedELBO(num_particles=1).loss(vae.model, vae.guide, x)
    pyro.set_rng_seed(5)
    elbo = Trace_ELBO().loss(vae.model, vae.guide, x)
    assert iwae == pytest.approx(elbo, rel=1e-5)


def test_bounds_grow_with_the_number_of_importance_samples():
    x = binary_data(200)
    vae = VAE((12,), latent_dim=2, hidden=(16,))
    pyrogen.fit(vae, x, steps=150, batch_size=50, lr=0.01, progress=False)
    torch.manual_seed(0)
    elbo = vae.elbo(x, num_samples=50).mean().item()
    bounds = [vae.log_likelihood(x, num_samples=k).mean().item() for k in (1, 10, 200)]
    assert bounds[0] == pytest.approx(elbo, abs=0.15)  # L_1 is an ELBO estimate
    assert elbo <= bounds[1] <= bounds[2]
    assert vae.bits_per_dim(x[:5], num_samples=10).shape == (5,)


def test_beta_scales_only_the_kl():
    x = binary_data(16)
    vae = VAE((12,), latent_dim=3, hidden=(16,))
    heavy = VAE((12,), latent_dim=3, hidden=(16,), beta=3.0)
    heavy.load_state_dict(vae.state_dict())
    loc, scale = vae.encode(x)
    kl = torch.distributions.kl_divergence(
        torch.distributions.Normal(loc, scale), torch.distributions.Normal(0.0, 1.0)
    ).sum()
    pyro.set_rng_seed(1)
    plain = TraceMeanField_ELBO().loss(vae.model, vae.guide, x)
    pyro.set_rng_seed(1)
    scaled = TraceMeanField_ELBO().loss(heavy.model, heavy.guide, x)
    assert scaled - plain == pytest.approx(2.0 * kl.item(), rel=1e-4)


@pytest.mark.parametrize("likelihood", ["bernoulli", "continuous_bernoulli", "gaussian"])
@pytest.mark.parametrize("objective", ["mean_field", "elbo", "iwae"])
def test_training_improves_the_bound(likelihood, objective):
    x = binary_data(128)
    vae = VAE(
        (12,),
        latent_dim=2,
        hidden=(32,),
        likelihood=likelihood,
        objective=objective,
        num_particles=3 if objective == "iwae" else 1,
    )
    before = vae.elbo(x, num_samples=20).mean().item()
    result = pyrogen.fit(vae, x, steps=120, batch_size=32, lr=0.01, progress=False)
    after = vae.elbo(x, num_samples=20).mean().item()
    assert after > before + 0.5
    assert all(math.isfinite(v) for v in result.losses)


def test_image_shaped_data_and_sampling():
    x = binary_data(20, dim=36).reshape(20, 1, 6, 6)
    vae = VAE((1, 6, 6), latent_dim=2, hidden=(16,))
    pyrogen.fit(vae, x, steps=5, progress=False)
    assert vae.sample(3).shape == (3, 1, 6, 6)
    assert vae.sample(3, mean=True).shape == (3, 1, 6, 6)
    assert vae.reconstruct(x[:4]).shape == (4, 1, 6, 6)
    assert vae.log_likelihood(x[:4], num_samples=7).shape == (4,)


def test_custom_modules_are_used_and_refuse_to_load_blindly(tmp_path):
    class Encoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(12, 4)

        def forward(self, x):
            loc, raw = self.linear(x).chunk(2, -1)
            return loc, torch.nn.functional.softplus(raw) + 1e-5

    vae = VAE((12,), latent_dim=2, encoder=Encoder())
    assert vae.config["encoder"] == "custom"
    vae.save(tmp_path / "vae.pt")
    with pytest.raises(
        ValueError, match=r"custom encoder module: rebuild it with VAE\(\.\.\., encoder=module\)"
    ):
        pyrogen.load(tmp_path / "vae.pt")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"data_shape": ()}, "data_shape: expected positive integers"),
        ({"data_shape": 0}, "data_shape: expected positive integers, got \\(0,\\)"),
        ({"data_shape": 1.5}, r"data_shape: expected a shape such as \(784,\), got 1.5"),
        ({"latent_dim": 0}, "latent_dim: expected a positive integer, got 0"),
        ({"likelihood": "poisson"}, "likelihood: expected one of"),
        ({"objective": "renyi"}, "objective: expected one of"),
        ({"beta": -1.0}, "beta: expected a positive number"),
        ({"objective": "iwae", "beta": 2.0}, "beta: expected 1 with objective='iwae'"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        VAE(**{"data_shape": (12,), **kwargs})


def test_an_int_data_shape_is_one_dimension():
    assert VAE(12, latent_dim=2).data_shape == (12,)
    assert pyrogen.FlowDensity(2).data_shape == (2,)


def test_bad_data():
    vae = VAE((12,), latent_dim=2)
    with pytest.raises(ValueError, match=r"x: expected shape \(n, 12\), got \(5, 13\)"):
        vae.elbo(torch.zeros(5, 13))
    with pytest.raises(ValueError, match=r"expected values in \[0, 1\] for a bernoulli"):
        pyrogen.fit(vae, torch.full((5, 12), 2.0), steps=1, progress=False)
    with pytest.raises(ValueError, match="x: expected finite values, got nan at row 0"):
        vae.elbo(torch.full((5, 12), float("nan")))
    with pytest.raises(ValueError, match="num_samples: expected a positive integer"):
        vae.log_likelihood(torch.zeros(5, 12), num_samples=0)


@pytest.mark.parametrize("validation", [False, True])
@pytest.mark.parametrize("conditional", [False, True])
def test_lean_mean_field_elbo_equals_pyros_value_and_gradients(validation, conditional):
    x = binary_data(16)
    if conditional:  # a learned prior p(z | c): the KL is between two networks' Normals
        vae = pyrogen.ConditionalVAE((12,), latent_dim=3, observed="top", hidden=(16,))
    else:
        vae = VAE((12,), latent_dim=3, hidden=(16,), beta=2.0)
    results = []
    for elbo in (AnalyticKLELBO(max_plate_nesting=1), TraceMeanField_ELBO(max_plate_nesting=1)):
        vae.zero_grad()
        pyro.set_rng_seed(7)
        with pyro.validation_enabled(validation):
            loss = elbo.differentiable_loss(vae.model, vae.guide, x, num_data=64)
        loss.backward()
        results.append((loss.item(), [p.grad.clone() for p in vae.parameters()]))
    (lean, lean_grads), (pyro_loss, pyro_grads) = results
    assert lean == pytest.approx(pyro_loss, rel=1e-6)
    for a, b in zip(lean_grads, pyro_grads, strict=True):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("posterior", ["iaf", "nsf"])
def test_flow_posterior_density_and_bounds_agree_with_pyro(posterior):
    x = binary_data(32)
    vae = VAE((12,), latent_dim=3, hidden=(16,), posterior=posterior, flow_transforms=2)
    assert vae.objective == "elbo"
    with torch.no_grad():  # move the flow off its near-identity start
        for parameter in vae.posterior_flow.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    # q(z | x) = the encoder's Normal pushed through T: density by change of variables
    q = vae._posterior(x[:1], None)
    z = q.rsample()
    z0 = q.transform(z)
    jacobian = torch.autograd.functional.jacobian(lambda v: q.transform(v), z[0])
    expected = q.base.log_prob(z0) + torch.linalg.slogdet(jacobian).logabsdet
    assert q.log_prob(z).item() == pytest.approx(expected.item(), abs=1e-4)
    torch.manual_seed(0)
    evaluated = vae.elbo(x, num_samples=2000).sum().item()
    pyro_elbo = -Trace_ELBO(num_particles=2000, vectorize_particles=True).loss(
        vae.model, vae.guide, x
    )
    assert pyro_elbo == pytest.approx(evaluated, rel=2e-3)
    assert vae.log_likelihood(x, num_samples=100).mean() > evaluated / 32
    with pytest.raises(ValueError, match="objective: 'mean_field' needs the analytic KL"):
        VAE((12,), posterior=posterior, objective="mean_field")


@pytest.mark.parametrize("observed", [None, "top"])
def test_fast_bernoulli_log_likelihood_equals_the_distributions(observed):
    if observed:
        vae = pyrogen.ConditionalVAE((16,), latent_dim=2, observed=observed, hidden=(8,))
    else:
        vae = VAE((16,), latent_dim=2, hidden=(8,))
    x = torch.rand(5, 16)  # grey levels too: the binary cross-entropy
    output = torch.randn(7, 5, 16) * 5
    expected = vae._likelihood(output).log_prob(x)
    assert torch.allclose(vae._log_likelihood(output, x), expected, rtol=1e-5, atol=1e-4)
