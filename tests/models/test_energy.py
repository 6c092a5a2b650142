"""Energy-based densities: log Z against closed forms, NUTS on the model as it is, and the
three objectives on a Gaussian, whose moments and normalizer are known."""

from __future__ import annotations

import math

import pyro
import pytest
import torch
from pyro.infer import MCMC, NUTS
from torch import nn

import pyrogen
from pyrogen.models.energy_sampling import DivergedChainsError, langevin, mala

MEAN = torch.tensor([1.0, -2.0])
COVARIANCE = torch.tensor([[1.0, 0.5], [0.5, 0.8]])


class QuadraticEnergy(nn.Module):
    """E(u) = (u - m)' P (u - m) / 2 of rows (..., D): a Gaussian's, Z = (2 pi)^(D/2) |P|^(-1/2)."""

    def __init__(self, mean: torch.Tensor, precision: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("precision", precision)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        centred = u.reshape(*u.shape[: u.dim() - 1], -1) - self.mean
        return 0.5 * torch.einsum("...i,ij,...j->...", centred, self.precision, centred)

    def log_partition(self) -> float:
        dims = self.mean.shape[0]
        return 0.5 * dims * math.log(2 * math.pi) - 0.5 * torch.logdet(self.precision).item()


def _gaussian_ebm(dims: int) -> tuple[pyrogen.EnergyDensity, QuadraticEnergy]:
    generator = torch.Generator().manual_seed(dims)
    root = torch.randn(dims, dims, generator=generator) / math.sqrt(dims)
    precision = root @ root.T + 0.5 * torch.eye(dims)
    energy = QuadraticEnergy(torch.randn(dims, generator=generator), precision)
    return pyrogen.EnergyDensity(dims, energy, confinement=None), energy


def _data(rows: int = 400) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(rows, 2, generator=generator)
    return MEAN + noise @ torch.linalg.cholesky(COVARIANCE).T


def _grid_moments(model: pyrogen.EnergyDensity, points: int = 300, bound: float = 8.0):
    """Mean and covariance of exp(-E) by the midpoint rule in standardized units (2-D)."""
    spacing = 2 * bound / points
    axis = -bound + spacing * (torch.arange(points) + 0.5)
    u = torch.cartesian_prod(axis, axis)
    with torch.no_grad():
        weights = torch.softmax(-model.standardized_energy(u), 0)
    x = model.data_shift + model.data_scale * u
    mean = weights @ x
    centred = x - mean
    return mean, (centred.T * weights) @ centred


@pytest.mark.parametrize("dims", [1, 2])
def test_quadrature_and_ais_match_a_gaussian_normalizer(dims):
    model, energy = _gaussian_ebm(dims)
    exact = energy.log_partition()
    quadrature = model.log_partition("quadrature")
    # A Gaussian on a grid of spacing 20/512 or finer: the midpoint rule is exact far below
    # float64 noise of the sum (errors of order exp(-1/spacing^2)); 1e-6 leaves room.
    assert quadrature.log_z == pytest.approx(exact, abs=1e-6)
    assert quadrature.error < 1e-4
    ais = model.log_partition("ais", chains=200, steps=100, seed=0)
    # AIS is unbiased for Z: within 4 standard errors (plus a little for the Jensen gap).
    assert abs(ais.log_z - exact) < 4 * ais.error + 0.02
    assert ais.error < 0.05
    assert "lower bound" in ais.description


def test_log_prob_is_a_normalized_density_in_data_units():
    # With standardization set, log p(x) is the Gaussian's density in data units: the
    # energy carries log(scale), so Z is the same in both units.
    model, energy = _gaussian_ebm(2)
    model.data_shift.copy_(torch.tensor([3.0, -1.0]))
    model.data_scale.copy_(torch.tensor([2.0, 0.5]))
    x = torch.randn(5, 2)
    covariance = torch.diag(model.data_scale) @ torch.linalg.inv(energy.precision)
    covariance = covariance @ torch.diag(model.data_scale)
    loc = model.data_shift + model.data_scale * energy.mean
    expected = torch.distributions.MultivariateNormal(loc, covariance).log_prob(x)
    assert torch.allclose(model.log_prob(x), expected, atol=1e-4)


def test_ais_gives_log_prob_above_three_dimensions():
    model, energy = _gaussian_ebm(4)
    assert not model.exact_likelihood
    x = torch.randn(3, 4)
    scores = model.score_examples(x, num_samples=200)
    exact = -model.energy_of(x).detach() - energy.log_partition()
    assert torch.allclose(scores["log_likelihood"], exact, atol=0.15)  # 4 SE of 200 chains
    descriptions = model.score_descriptions(200, 4)
    assert "over-estimate in expectation" in descriptions["log_likelihood"]
    assert "not an ELBO" in descriptions["elbo"]
    with pytest.raises(ValueError, match="quadrature: expected at most 3 dimensions"):
        model.log_partition("quadrature")


def test_nuts_samples_the_model_unchanged():
    pyro.set_rng_seed(0)
    model, energy = _gaussian_ebm(2)
    model.data_shift.copy_(torch.tensor([1.0, -1.0]))
    model.data_scale.copy_(torch.tensor([2.0, 0.5]))
    mcmc = MCMC(NUTS(model.model), num_samples=300, warmup_steps=150, disable_progbar=True)
    mcmc.run(None)
    draws = mcmc.get_samples()["obs"]
    mean, covariance = _grid_moments(model)
    sd = covariance.diagonal().sqrt()
    # 300 draws of a well-mixed chain: the mean's Monte Carlo error is about 0.06 sd.
    assert torch.allclose(draws.mean(0), mean, atol=float(0.25 * sd.max()))
    assert torch.allclose(draws.std(0), sd, rtol=0.2)


def test_mala_adapts_to_its_target_acceptance_and_samples_the_density():
    torch.manual_seed(0)
    model, energy = _gaussian_ebm(2)
    result = mala(model._log_density, torch.randn(500, 2), steps=200, step_size=2.0)
    assert abs(result.acceptance - 0.574) < 0.1
    mean, covariance = _grid_moments(model)
    assert torch.allclose(result.samples.mean(0), mean, atol=0.15)
    assert torch.allclose(torch.cov(result.samples.T), covariance, atol=0.2)
    draws = model.sample(50, method="langevin", steps=20, step_size=0.05)
    assert draws.shape == (50, 2) and torch.isfinite(draws).all()
    for sampler in (mala, langevin):  # on_step sees every state, the last one returned
        path = []
        last = sampler(
            model._log_density, torch.randn(3, 2), steps=4, step_size=0.1, on_step=path.append
        )
        assert len(path) == 4 and torch.equal(path[-1], getattr(last, "samples", last))


def test_dsm_recovers_a_gaussian():
    x = _data()
    model = pyrogen.EnergyDensity(2, hidden=(32, 32))
    pyrogen.fit(model, x, steps=500, lr=3e-3, seed=0, progress=False)
    mean, covariance = _grid_moments(model)
    # DSM fits the data blurred by N(0, sigma^2 scale^2), sigma = 0.1: the covariance
    # grows by 1% of the variances. Measured errors after 500 steps are about 0.02 (mean)
    # and 0.04 (covariance); 0.1 leaves room for other seeds and platforms.
    blurred = torch.cov(x.T) + torch.diag(0.01 * x.var(0))
    assert torch.allclose(mean, x.mean(0), atol=0.1)
    assert torch.allclose(covariance, blurred, atol=0.1)


def test_nce_learns_log_z():
    x = _data()
    model = pyrogen.EnergyDensity(2, objective="nce", hidden=(32, 32))
    pyrogen.fit(model, x, steps=300, seed=0, progress=False)
    quadrature = model.log_partition()
    # The learned log Z is fitted by the classifier, not computed: 400 rows give it a
    # sampling error of a few hundredths; 0.1 nats.
    assert model.log_normalizer.item() == pytest.approx(quadrature.log_z, abs=0.1)
    assert "nce_log_partition" in model.fit_statistics(x)
    assert model.training_objective == (
        "NoiseContrastiveEstimation loss (not an ELBO), nats per example"
    )


def test_pcd_replay_buffer_is_state_and_resumes_exactly(tmp_path):
    x = _data(64)
    model = pyrogen.EnergyDensity(2, objective="pcd", hidden=(8,), buffer_size=32)
    before = model.replay_buffer.clone()
    pyrogen.fit(model, x, steps=3, seed=0, progress=False, batch_size=16)
    assert not torch.equal(before, model.replay_buffer)
    model.save(tmp_path / "ebm.pt")
    loaded = pyrogen.load(tmp_path / "ebm.pt")
    assert torch.equal(loaded.replay_buffer, model.replay_buffer)
    results = []
    for each in (model, loaded):  # the same chains continue the same way
        pyro.set_rng_seed(1)
        results.append(each.advance_chains(5))
    assert torch.equal(*results)


def test_diverging_chains_raise_a_named_error():
    model, _ = _gaussian_ebm(2)
    model = pyrogen.EnergyDensity(2, objective="pcd", hidden=(8,), langevin_step_size=1e6)
    with pytest.raises(DivergedChainsError, match="langevin: the chains diverged"):
        model.advance_chains(4)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"objective": "ml"}, "objective: expected one of .*'quadrature', got 'ml'"),
        ({"energy": "rnn"}, r"energy: expected one of \('mlp', 'conv'\)"),
        ({"energy": "conv"}, r"energy: expected data_shape \(C, H, W\)"),
        ({"noise_levels": ()}, "noise_levels: expected at least one level"),
        ({"confinement": -1.0}, "confinement: expected a positive number"),
    ],
)
def test_bad_arguments_are_named(options, message):
    with pytest.raises(ValueError, match=message):
        pyrogen.EnergyDensity(2, **options)


def test_bad_data_are_named():
    model = pyrogen.EnergyDensity(2, hidden=(8,))
    with pytest.raises(ValueError, match=r"x: expected shape \(n, 2\), got \(4, 3\)"):
        model.setup(torch.zeros(4, 3))
    with pytest.raises(ValueError, match="y: an energy model takes no labels"):
        model.log_prob(torch.zeros(4, 2), torch.zeros(4))
    with pytest.raises(ValueError, match="method: expected one of 'mala', 'langevin'"):
        model.sample(3, method="hmc")


def test_log_partition_is_cached_until_a_parameter_changes(monkeypatch):
    import pyrogen.models.energy as energy_module

    calls = []
    quadrature = energy_module.quadrature_log_partition

    def counted(*args, **kwargs):
        calls.append(1)
        return quadrature(*args, **kwargs)

    monkeypatch.setattr(energy_module, "quadrature_log_partition", counted)
    model = pyrogen.EnergyDensity(2, hidden=(8,))
    x = torch.randn(6, 2)
    first = model.log_partition()
    scores = model.log_prob(x)
    assert model.log_partition() is first and len(calls) == 1  # the fast path
    assert torch.equal(model.log_prob(x), scores)
    # An optimizer step changes the parameters in place: log Z is computed afresh.
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    model.energy_of(x).sum().backward()
    optimizer.step()
    second = model.log_partition()
    assert len(calls) == 2 and second.log_z != first.log_z
    assert not torch.equal(model.log_prob(x), scores)
    # So does loading other weights (copy_ advances the version counters).
    model.load_state_dict(pyrogen.EnergyDensity(2, hidden=(8,)).state_dict())
    model.log_partition()
    assert len(calls) == 3
    # Other options are other entries; seeded AIS is cached, unseeded AIS never.
    assert model.log_partition(points=64) is not model.log_partition()
    ais = model.log_partition("ais", chains=4, steps=3)
    assert model.log_partition("ais", chains=4, steps=3) is ais
    assert model.log_partition("ais", chains=4, steps=3, seed=None) is not ais


def test_a_model_saved_with_a_custom_energy_module_is_refused_with_how_to_rebuild(tmp_path):
    class Quadratic(torch.nn.Module):  # E(u) = |u|^2 / 2
        def forward(self, u):
            return 0.5 * (u**2).sum(-1)

    model = pyrogen.EnergyDensity((2,), Quadratic(), confinement=None)
    assert model.config["energy"] == "custom"
    model.save(tmp_path / "ebm.pt")
    message = r"custom energy module: rebuild it with EnergyDensity\(\.\.\., energy=module\)"
    with pytest.raises(ValueError, match=message):
        pyrogen.load(tmp_path / "ebm.pt")
