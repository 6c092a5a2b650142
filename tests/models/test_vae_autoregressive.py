"""VAEs with an autoregressive decoder (PixelVAE-style PixelCNN, MADE) or a MADE prior: still
one Pyro model/guide pair trained by the VAE's ELBO, checked against closed forms and Pyro."""

from __future__ import annotations

import itertools
import math

import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

import pyrogen
from pyrogen.models.vae import VAE


def _binary(rows: int, shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.bernoulli(torch.full((rows, *shape), 0.4), generator=generator)


def _tiny_pixel_vae(**options) -> VAE:
    torch.manual_seed(0)
    return VAE(
        (1, 2, 3),
        latent_dim=2,
        hidden=(8,),
        decoder="pixelcnn",
        decoder_channels=4,
        decoder_layers=2,
        **options,
    )


def _every_binary(shape: tuple[int, ...]) -> torch.Tensor:
    values = math.prod(shape)
    table = torch.tensor(list(itertools.product([0.0, 1.0], repeat=values)))
    return table.reshape(-1, *shape)


@pytest.mark.parametrize(
    "make",
    [
        _tiny_pixel_vae,
        lambda: VAE((6,), latent_dim=2, hidden=(8,), decoder="made"),
    ],
    ids=["pixelcnn", "made"],
)
def test_the_decoder_is_a_normalized_chain_rule_given_z(make):
    model = make()
    z = torch.randn(3, 2)
    likelihood = model._likelihood(model._decode(z, None))
    every = _every_binary(model.data_shape)  # (2^D, ...), against each of the 3 codes
    log_probs = likelihood.log_prob(every[:, None])  # (2^D, 3)
    assert log_probs.shape == (len(every), 3)
    torch.testing.assert_close(torch.logsumexp(log_probs.detach(), 0), torch.zeros(3))
    # and it depends on z: the codes give different distributions
    assert not torch.allclose(log_probs[:, 0], log_probs[:, 1])


def test_the_pixelcnn_decoder_is_autoregressive_by_gradients():
    model = _tiny_pixel_vae()
    density = model.decoder.density
    x = _binary(1, (1, 2, 3)).requires_grad_()
    z = torch.randn(1, 2)
    params = density._conditionals(density._standardize(x), model._decode(z, None))
    values = math.prod(model.data_shape)
    flat = params.reshape(values)  # one logit per pixel, raster order
    for i in range(values):
        (grad,) = torch.autograd.grad(flat[i], x, retain_graph=True)
        seen = grad.reshape(values).abs() > 0
        assert not seen[i:].any(), f"logit {i} sees pixels {seen.nonzero().flatten().tolist()}"
    # z reaches every pixel's conditional
    z = z.requires_grad_()
    params = density._conditionals(density._standardize(x.detach()), model._decode(z, None))
    for i in range(values):
        (grad,) = torch.autograd.grad(params.reshape(values)[i], z, retain_graph=True)
        assert grad.abs().sum() > 0


def test_the_elbo_of_a_tiny_pixel_vae_is_pyros_and_the_hand_computed_one():
    model = _tiny_pixel_vae()
    x = _binary(5, (1, 2, 3))
    pyro.set_rng_seed(1)
    terms = model.elbo_terms(x)
    pyro.set_rng_seed(1)  # the same draw of z, so the same reconstruction term
    loss = TraceMeanField_ELBO().loss(model.model, model.guide, x)
    assert -loss == pytest.approx(float(terms["elbo"].sum()), rel=1e-5)
    # by hand: the analytic KL of two diagonal Gaussians and the chain rule at the draw z
    pyro.set_rng_seed(1)
    loc, scale = model.encoder(x)
    z = loc + scale * torch.randn(1, *loc.shape)[0]
    kl = 0.5 * (loc**2 + scale**2 - 1 - 2 * scale.log()).sum(-1)
    logits = model.decoder.density._conditionals(x, z)[..., 0]
    log_likelihood = (
        -torch.nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="none")
        .flatten(1)
        .sum(-1)
    )
    torch.testing.assert_close(terms["kl"], kl.detach())
    torch.testing.assert_close(terms["reconstruction"], log_likelihood.detach())


def test_the_elbo_of_a_made_prior_vae_is_pyros_trace_elbo():
    torch.manual_seed(0)
    model = VAE((6,), latent_dim=3, hidden=(8,), decoder="made", prior="made")
    assert model.objective == "elbo"  # no closed-form KL against a MADE prior
    x = _binary(7, (6,))
    pyro.set_rng_seed(2)
    terms = model.elbo_terms(x)
    pyro.set_rng_seed(2)
    loss = Trace_ELBO().loss(model.model, model.guide, x)
    assert -loss == pytest.approx(float(terms["elbo"].sum()), rel=1e-5)
    # the prior is a normalized density over z with p(z_2 | z_1) depending on z_1: by
    # quadrature on a grid, for a 2-D prior
    torch.manual_seed(3)
    prior = VAE((6,), latent_dim=2, hidden=(8,), prior="made").prior_density
    grid = torch.linspace(-10, 10, 801)
    z = torch.cartesian_prod(grid, grid)
    with torch.no_grad():
        density = prior.chain_log_prob(z).exp().reshape(801, 801)
        mass = torch.trapezoid(torch.trapezoid(density, grid), grid)
    assert float(mass) == pytest.approx(1.0, abs=1e-3)
    first = density.sum(1, keepdim=True)
    conditionals = density / first  # p(z_2 | z_1) on the grid, one row per z_1
    assert not torch.allclose(conditionals[300], conditionals[500], atol=1e-4)


@pytest.mark.parametrize(
    "options",
    [
        {"decoder": "pixelcnn", "decoder_channels": 4, "decoder_layers": 2},
        {"decoder": "made", "prior": "made"},
    ],
    ids=["pixelcnn-decoder", "made-decoder-made-prior"],
)
def test_training_decreases_the_loss_and_reports_the_kl(options):
    torch.manual_seed(0)
    shape = (1, 4, 4) if options["decoder"] == "pixelcnn" else (16,)
    x = _binary(64, shape)
    x[:32] = 1 - x[:32].flip(-1)  # two kinds of rows, so z has something to say
    model = VAE(shape, latent_dim=2, hidden=(16,), **options)
    result = pyrogen.fit(model, x, steps=150, batch_size=32, lr=1e-2, seed=0, progress=False)
    losses = torch.tensor(result.losses)
    assert losses[-20:].mean() < losses[:20].mean() - 1.0
    scores = model.score_examples(x, num_samples=4)
    assert set(scores) == {"elbo", "log_likelihood", "reconstruction", "kl"}
    torch.testing.assert_close(scores["reconstruction"] - scores["kl"], scores["elbo"])
    if "prior" not in options:  # analytic: a KL is never negative
        assert (scores["kl"] >= 0).all()
    stats = pyrogen.diagnostics.score(model, x, iw_samples=4)
    assert "kl_per_example" in stats and "collapse" in stats["bounds"]["kl_per_example"]


def test_save_and_load_round_trip(tmp_path):
    model = _tiny_pixel_vae(prior="made")
    path = tmp_path / "pixel_vae.pt"
    model.save(path)
    loaded = pyrogen.load(path)
    assert loaded.config == model.config
    assert loaded.config["decoder"] == "pixelcnn" and loaded.config["prior"] == "made"
    x = _binary(4, (1, 2, 3))
    pyro.set_rng_seed(0)
    first = model.elbo_terms(x)
    pyro.set_rng_seed(0)
    second = loaded.elbo_terms(x)
    for key in first:
        assert torch.equal(first[key], second[key])
    pyro.set_rng_seed(0)
    draws = model.sample(3)
    pyro.set_rng_seed(0)
    assert torch.equal(draws, loaded.sample(3))


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda: VAE((16,), decoder="pixelcnn"),
            r"decoder: expected data_shape \(C, H, W\) or \(H, W\) for 'pixelcnn', got \(16,\)",
        ),
        (
            lambda: VAE((1, 4, 4), likelihood="continuous_bernoulli", decoder="pixelcnn"),
            r"likelihood: expected one of \('bernoulli', 'gaussian'\) with decoder='pixelcnn'",
        ),
        (
            lambda: VAE((6,), prior="made", objective="mean_field"),
            r"objective: 'mean_field' needs the analytic KL .* with prior='made'",
        ),
        (lambda: VAE((6,), prior="flow"), r"prior: expected one of"),
        (
            lambda: pyrogen.ConditionalVAE((6,), num_classes=2, decoder="made"),
            r"decoder: ConditionalVAE supports 'mlp', 'conv' only, got 'made'",
        ),
        (
            lambda: pyrogen.GaussianMixtureVAE((6,), prior="made"),
            r"prior: GaussianMixtureVAE supports 'mixture' only, got 'made'",
        ),
        (lambda: VAE((6,), decoder="made", decoder_layers=0), r"decoder_layers: expected"),
        (
            lambda: VAE((6,), latent_dim=2, hidden=(4,), decoder="made").sample(2, mean=True),
            r"mean: expected False for decoder='made'",
        ),
    ],
)
def test_bad_settings_name_the_argument(build, message):
    with pytest.raises(ValueError, match=message):
        build()
