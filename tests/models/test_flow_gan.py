"""Flow-GAN: maximum likelihood alone trains as FlowDensity does, the adversarial term
reaches the flow, the exact log-likelihood is the generator's, and runs save and resume."""

from __future__ import annotations

import pyro
import pytest
import torch

import pyrogen
from pyrogen.models.flow_gan import FlowGAN
from pyrogen.models.gan import GAN


def _rows(n: int = 64) -> torch.Tensor:
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(0)) * 2 + 1


def test_likelihood_only_training_equals_the_flow_density_maximum_likelihood():
    x, options = _rows(), {"transforms": 2, "hidden": (16,)}
    gan = FlowGAN((2,), "realnvp", likelihood_weight=1.0, adversarial_weight=0.0, ema=None,
                  **options)  # fmt: skip
    gan.initialize(0)  # both start from these weights; fit keeps the flow's copy as given
    density = pyrogen.FlowDensity((2,), "realnvp", **options)
    density.flow.load_state_dict(gan.generator.flow.state_dict())
    assert [p.name for p in gan.players()] == ["generator"]
    settings = {"steps": 20, "batch_size": 16, "lr": 1e-2, "optim": torch.optim.Adam}
    ours = pyrogen.fit(gan, x, seed=0, progress=False, **settings)
    theirs = pyrogen.fit(density, x, seed=0, progress=False, **settings)
    # float32 sums in another order (the flow's standardization is composed the same way)
    torch.testing.assert_close(torch.tensor(ours.losses), torch.tensor(theirs.losses))
    torch.testing.assert_close(gan.log_prob(x), density.log_prob(x), rtol=1e-4, atol=1e-4)
    assert "maximum likelihood" in gan.training_objective


def test_the_adversarial_term_reaches_the_flow_and_the_likelihood_adds_its_own():
    x = _rows(16)
    gan = FlowGAN((2,), transforms=2, hidden=(16,), likelihood_weight=0.5)
    gan.setup(x)
    torch.manual_seed(1)
    adversarial = GAN.player_loss(gan, "generator", x, None, 16)  # the GAN's own term
    adversarial.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in gan.generator.parameters())
    torch.manual_seed(1)
    hybrid = gan.player_loss("generator", x, None, 16)
    expected = adversarial - 0.5 * gan.density(averaged=False).log_prob(x).sum()
    torch.testing.assert_close(hybrid, expected)
    assert "adversarial (nonsaturating) loss + 0.5 x (-log p(x))" in gan.training_objective


def test_the_exact_likelihood_is_the_sampled_generator_and_the_model_observes_it():
    x = _rows(32)
    gan = FlowGAN((2,), transforms=2, hidden=(16,), num_classes=2)
    y = torch.arange(32) % 2
    pyrogen.fit(gan, x, y, steps=5, batch_size=8, progress=False)
    assert gan.has_likelihood and gan.exact_likelihood
    context = torch.nn.functional.one_hot(y, 2).float()
    expected = gan.density(context).log_prob(x)  # the average, which sample draws from
    torch.testing.assert_close(gan.log_prob(x, y), expected)
    trace = pyro.poutine.trace(gan.model).get_trace(x, y)
    torch.testing.assert_close(
        trace.nodes["x"]["fn"].log_prob(x), gan.density(context, averaged=False).log_prob(x)
    )
    assert gan.sample(4, torch.tensor([0, 1, 0, 1])).shape == (4, 2)


def test_save_load_and_resume_continue_exactly(tmp_path):
    x = _rows()
    settings = {"batch_size": 16, "progress": False, "seed": 3}
    whole = FlowGAN((2,), transforms=2, hidden=(8,), likelihood_weight=0.1)
    pyrogen.fit(whole, x, steps=8, **settings)
    first = FlowGAN((2,), transforms=2, hidden=(8,), likelihood_weight=0.1)
    checkpoint = tmp_path / "run.pt"
    pyrogen.fit(first, x, steps=4, checkpoint=checkpoint, **settings)
    resumed = FlowGAN((2,), transforms=2, hidden=(8,), likelihood_weight=0.1)
    pyrogen.fit(resumed, x, steps=8, checkpoint=checkpoint, resume=True, **settings)
    for name, value in whole.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], value, msg=name)
    whole.save(tmp_path / "model.pt")
    loaded = pyrogen.load(tmp_path / "model.pt")
    assert type(loaded) is FlowGAN and loaded.config == whole.config
    torch.testing.assert_close(loaded.log_prob(x), whole.log_prob(x))


@pytest.mark.parametrize(
    "options, message",
    [
        ({"latent_dim": 3}, r"latent_dim: expected None or 2"),
        ({"generator": "mlp"}, "generator: expected one of"),
        ({"likelihood_weight": -1.0}, "likelihood_weight"),
        ({"adversarial_weight": 0.0}, "expected at least one above 0"),
    ],
)
def test_bad_settings_are_named(options, message):
    with pytest.raises(ValueError, match=message):
        FlowGAN((2,), **options)
