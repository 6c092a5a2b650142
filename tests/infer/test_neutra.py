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


def test_neutra_removes_the_divergences_of_a_funnel():
    # Plain NUTS cannot take one step size through both the funnel's neck (y << 0, where x
    # varies on a scale of exp(y / 2)) and its mouth, and diverges near the neck; a flow
    # that has learnt x = exp(y / 2) e makes the posterior of e nearly a standard normal.
    # At this budget (50 warm-up steps, 100 draws; trees capped at depth 6 for plain NUTS,
    # whose deep trees in the neck are what costs time) seed 0 gave 8 divergences for
    # plain NUTS and 2 for NeuTra from a 600-step guide. On seeds 1 and 2 plain NUTS did
    # not reach the neck in 150 iterations (0 divergences; NeuTra 1-2), so this budget
    # separates them only on a chain that enters the neck: the seed is fixed to one that
    # does, and the counts repeat. A weak check, kept short for the test suite.
    pyro.set_rng_seed(0)
    kernel = NUTS(funnel, max_tree_depth=6)
    plain = MCMC(kernel, num_samples=100, warmup_steps=50, disable_progbar=True)
    plain.run()
    plain_divergences = len(plain.diagnostics()["divergences"]["chain 0"])
    guide = AutoFlow(funnel)
    guide.fit(steps=600)
    idata = neutra(funnel, guide, num_samples=100, warmup=50, num_chains=1)
    neutra_divergences = int(idata.sample_stats["diverging"].sum())
    assert plain_divergences >= 4
    assert neutra_divergences <= plain_divergences // 2


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
