"""GaussianMixtureVAE: the enumerated prior is the mixture density; clustering; sampling."""

from __future__ import annotations

import pyro
import pytest
import torch
from pyro.infer import TraceEnum_ELBO

import pyrogen
from pyrogen import GaussianMixtureVAE
from tests.models.test_vae import binary_data


def _mixture_log_density(model: GaussianMixtureVAE, z: torch.Tensor) -> torch.Tensor:
    """log sum_c pi_c N(z | mu_c, sigma_c), one component at a time."""
    weights = torch.softmax(model.component_logits, -1)
    terms = [
        weights[c].log()
        + torch.distributions.Normal(model.component_locs[c], model.component_log_scales[c].exp())
        .log_prob(z)
        .sum(-1)
        for c in range(model.n_components)
    ]
    return torch.logsumexp(torch.stack(terms), 0)


def _model() -> GaussianMixtureVAE:
    torch.manual_seed(0)
    model = GaussianMixtureVAE((12,), latent_dim=2, n_components=3, hidden=(16,))
    with torch.no_grad():
        model.component_log_scales.normal_(0, 0.3)
        model.component_logits.normal_()
    return model


def test_enumerated_elbo_equals_the_hand_written_marginal_prior_draw_for_draw():
    x = binary_data(10)
    model = _model()
    pyro.set_rng_seed(2)
    loss = TraceEnum_ELBO(max_plate_nesting=1).loss(model.model, model.guide, x)
    pyro.set_rng_seed(2)
    loc, scale = model.encoder(x)
    posterior = torch.distributions.Normal(loc, scale)
    z = posterior.rsample()
    log_px = torch.distributions.Bernoulli(logits=model.decoder(z)).log_prob(x).sum(-1)
    hand = log_px + _mixture_log_density(model, z) - posterior.log_prob(z).sum(-1)
    assert -loss == pytest.approx(hand.sum().item(), rel=1e-5)


def test_evaluation_agrees_with_pyro_and_the_bounds_are_ordered():
    x = binary_data(20)
    model = _model()
    torch.manual_seed(0)
    evaluated = model.elbo(x, num_samples=3000).sum().item()
    elbo = TraceEnum_ELBO(num_particles=3000, vectorize_particles=True, max_plate_nesting=1)
    assert -elbo.loss(model.model, model.guide, x) == pytest.approx(evaluated, rel=2e-3)
    assert evaluated / 20 <= model.log_likelihood(x, num_samples=200).mean().item()


def test_components_cluster_separated_data():
    generator = torch.Generator().manual_seed(0)
    prototypes = torch.tensor([[1.0] * 6 + [0.0] * 6, [0.0] * 6 + [1.0] * 6, [1.0, 0.0] * 6])
    classes = torch.randint(3, (300,), generator=generator)
    flips = torch.rand(300, 12, generator=generator) < 0.05
    x = torch.where(flips, 1 - prototypes[classes], prototypes[classes])
    model = _model()
    pyrogen.fit(model, x, steps=200, batch_size=50, lr=0.01, progress=False)
    model.init_components(x)
    pyrogen.fit(model, x, steps=100, batch_size=50, lr=0.01, progress=False)
    clusters = model.predict(x)
    # each class is (almost) one cluster: the best one-to-one matching is nearly perfect
    agreement = torch.zeros(3, 3)
    agreement.index_put_((classes, clusters), torch.ones(300), accumulate=True)
    assert agreement.max(1).values.sum() / 300 > 0.95
    assert model.predict_proba(x[:4]).sum(-1).allclose(torch.ones(4))


def test_sampling_picks_components():
    model = _model()
    assert model.sample(5).shape == (5, 12)
    assert model.sample(2, y=[0, 2], mean=True).shape == (2, 12)
    with pytest.raises(ValueError, match=r"y: expected labels in 0..2, got 3"):
        model.sample(2, y=[0, 3])


def test_init_components_floors_the_variance_of_a_collapsed_cluster():
    model = _model()
    x = binary_data(20)[:1].expand(20, 12)  # twenty identical rows: one point in z
    model.init_components(x)
    _, scale = model.encode(x[:1])
    assert (model.component_log_scales.exp() >= scale.squeeze(0) * 0.999).all()
    assert torch.isfinite(model.elbo(binary_data(20))).all()


# --- the warm-up of ``pyrogen fit gmvae``: ComponentWarmup -------------------------------------
def _warm_up(warmup_epochs, epochs):
    from pyrogen.infer.callbacks import ComponentWarmup

    model, start = _model(), ComponentWarmup(warmup_epochs, seed=1)
    calls = []
    model.init_components = lambda x, seed: calls.append((x.shape[0], seed))
    pyrogen.fit(model, binary_data(16), epochs=epochs, batch_size=8, callbacks=[start],
                progress=False)  # fmt: skip
    return calls, start.summary["component_init"]


def test_component_warmup_starts_the_components_after_the_warm_up_epochs():
    calls, said = _warm_up(2, epochs=3)
    assert calls == [(16, 1)]
    assert said.endswith("the 16 training rows after 2 warm-up epoch(s)")
    calls, said = _warm_up(0, epochs=1)
    assert calls == [(16, 1)] and said.endswith("before training")


def test_component_warmup_defaults_to_one_epoch_where_the_run_is_longer():
    calls, said = _warm_up(None, epochs=2)
    assert calls == [(16, 1)] and "after 1 warm-up epoch(s)" in said
    calls, said = _warm_up(None, epochs=1)
    assert calls == [] and said.startswith("not initialised from the codes")


def test_component_warmup_needs_fewer_epochs_than_the_run():
    with pytest.raises(ValueError, match="warmup_epochs: expected fewer epochs than the run's 2"):
        _warm_up(2, epochs=2)
