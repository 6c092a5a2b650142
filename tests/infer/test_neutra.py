"""NeuTra: NUTS through a fitted AutoFlow, returned as ArviZ draws of the model's own sites."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import MCMC, NUTS

from pyrogen.guides import AutoFlow
from pyrogen.infer import neutra

FUNNEL_DIMS = 9


def funnel() -> None:
    """Neal's funnel: y ~ N(0, 3), x_i | y ~ N(0, exp(y / 2)), i = 1..9."""
    y = pyro.sample("y", dist.Normal(0.0, 3.0))
    scale = (y / 2).exp().unsqueeze(-1)
    pyro.sample("x", dist.Normal(torch.zeros(FUNNEL_DIMS), scale).to_event(1))


def test_neutra_reaches_the_neck_of_a_funnel_that_plain_nuts_misses():
    # Plain NUTS cannot take one step size through both the funnel's neck (y << 0, where x
    # varies on a scale of exp(y / 2)) and its mouth: at a short budget its chain stays in
    # the mouth, so its sd(y) is too small and it never reaches y < -3 (15.9% of the
    # truth); a flow that has learnt x = exp(y / 2) e makes the posterior of e nearly a
    # standard normal. Measured at this budget (100 warm-up steps, 100 draws, one chain;
    # plain trees capped at depth 6; NeuTra from a 600-step guide) on seeds 0-4: lowest y
    # of plain NUTS 0.48, -2.78, -0.31, -1.39, -2.24 (sd(y) 1.05-2.21), of NeuTra -8.02,
    # -6.67, -7.40, -6.46, -4.26 (sd(y) 2.70-3.30). Divergences do not separate them at
    # this budget (plain 0-6, NeuTra 0-6: plain NUTS rarely enters the neck where it would
    # diverge); see benchmarks/results/flows_posterior_funnel_neutra.md for a longer run.
    pyro.set_rng_seed(0)
    plain = MCMC(
        NUTS(funnel, max_tree_depth=6), num_samples=100, warmup_steps=100, disable_progbar=True
    )
    plain.run()
    plain_y = plain.get_samples()["y"]
    guide = AutoFlow(funnel)
    guide.fit(steps=600, seed=0)
    idata = neutra(funnel, guide, num_samples=100, warmup=100, num_chains=1, seed=0)
    neutra_y = torch.as_tensor(idata.posterior["y"].values).reshape(-1)
    assert neutra_y.min() < -4.0
    assert neutra_y.min() < plain_y.min() - 1.5
    assert abs(neutra_y.std() - 3.0) < 0.6
    assert abs(neutra_y.std() - 3.0) < abs(plain_y.std() - 3.0)


def test_neutra_returns_the_model_sites_by_chain_and_draw():
    # A conjugate normal mean: the exact posterior is N(sum x / (n + 1), 1 / (n + 1)).
    x = torch.tensor([0.5, 1.5, 1.0, 2.0])

    def model(x):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        scale = pyro.sample("scale", dist.LogNormal(0.0, 0.1))
        with pyro.plate("rows", len(x)):
            pyro.sample("obs", dist.Normal(mu, scale), obs=x)

    guide = AutoFlow(model, transforms=1, hidden=(8,))
    guide.fit(x, steps=100, particles=4)
    before = {name: p.clone() for name, p in guide.named_parameters()}
    idata = neutra(model, guide, x, num_samples=60, warmup=40, num_chains=2, seed=3)
    assert set(idata.groups()) == {"posterior", "sample_stats"}
    assert idata.posterior["mu"].shape == (2, 60)
    assert idata.posterior["scale"].shape == (2, 60)
    assert (idata.posterior["scale"].values > 0).all()
    assert idata.sample_stats["diverging"].shape == (2, 60)
    # the guide is untouched and trainable again
    assert all(torch.equal(p, before[name]) for name, p in guide.named_parameters())
    assert all(p.requires_grad for p in guide.parameters())


def test_neutra_refuses_what_it_cannot_use():
    guide = AutoFlow(funnel)
    with pytest.raises(ValueError, match="guide: expected a fitted guide"):
        neutra(funnel, guide)
    with pytest.raises(TypeError, match="guide: expected a pyrogen.AutoFlow"):
        neutra(funnel, pyro.infer.autoguide.AutoNormal(funnel))
