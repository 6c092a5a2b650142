"""``pyrogen.fit(..., compile=True)``: the recorded and replayed step gives the eager
step's losses and parameters, and falls back to eager training, with a warning, for a step
that is not one fixed graph."""

from __future__ import annotations

import pyro
import pytest
import torch

import pyrogen
from pyrogen.infer.compiled import ReplayedLoss

ROWS = 150  # batches of 32: four of 32 and one of 22, so two recordings


def _bits(d: int = 6) -> torch.Tensor:
    return (torch.rand(ROWS, d, generator=torch.Generator().manual_seed(0)) > 0.5).float()


def _labels() -> torch.Tensor:
    return torch.arange(ROWS) % 3


FAMILIES = {
    "vae": (lambda: pyrogen.VAE((6,), latent_dim=2, hidden=(16,)), _bits, None),
    "cvae": (
        lambda: pyrogen.ConditionalVAE((6,), latent_dim=2, hidden=(16,), num_classes=3),
        _bits,
        _labels,
    ),
    "flow": (lambda: pyrogen.FlowDensity((2,), hidden=(16,)), lambda: _bits(2) + 0.1, None),
    "diffusion": (
        lambda: pyrogen.DiffusionVAE((6,), timesteps=10, hidden=(16,), likelihood="bernoulli"),
        _bits,
        None,
    ),
    "autoregressive": (lambda: pyrogen.AutoregressiveDensity((6,)), _bits, None),
}


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
@pytest.mark.parametrize("family", FAMILIES)
def test_a_compiled_fit_gives_the_eager_fit_bit_for_bit(family, device, recwarn):
    make, data, labels = FAMILIES[family]
    x, y = data(), None if labels is None else labels()
    options = {"steps": 12, "batch_size": 32, "progress": False, "seed": 3, "device": device}
    eager, compiled = make(), make()
    expected = pyrogen.fit(eager, x, y, **options)
    result = pyrogen.fit(compiled, x, y, compile=True, **options)
    assert not [w for w in recwarn if "compile" in str(w.message)]
    assert result.losses == expected.losses
    for name, value in eager.state_dict().items():
        assert torch.equal(compiled.state_dict()[name], value), name


def test_each_batch_shape_is_recorded_once_and_validated_steps_run_eagerly():
    vae = pyrogen.VAE((6,), latent_dim=2, hidden=(16,))
    pyrogen.fit(vae, _bits(), steps=1, progress=False)  # set up
    loss = ReplayedLoss(pyrogen.infer.engine._ELBOLoss(vae, vae.loss), "VAE")
    loss(_bits()[:32], None, ROWS).backward()  # Pyro's validation is on in the tests
    assert loss.recordings == {}
    with pyro.validation_enabled(False):
        for rows in (32, 32, 22, 22):
            loss(_bits()[:rows], None, ROWS).backward()
    assert sorted(key[0][0] for key in loss.recordings) == [22, 32]
    assert loss.reason is None


def test_a_step_that_reads_values_trains_eagerly_with_a_warning():
    """The mixture enumerates its assignments with a shortcut that reads them."""
    x = torch.randn(ROWS, 2, generator=torch.Generator().manual_seed(0))
    options = {"steps": 5, "progress": False, "early_stopping": None}
    expected = pyrogen.fit(pyrogen.GaussianMixture(2), x, **options)
    with pytest.warns(RuntimeWarning, match="GaussianMixture's training step cannot be recorded"):
        result = pyrogen.fit(pyrogen.GaussianMixture(2), x, compile=True, **options)
    assert result.losses == expected.losses


@pytest.mark.parametrize(
    "options, message",
    [
        ({"compile": "yes"}, "compile: expected True or False, got 'yes'"),
        ({"compile": True, "micro_batch_size": 8}, "compile: expected whole batches"),
    ],
)
def test_bad_compile_options_are_named(options, message):
    with pytest.raises(ValueError, match=message):
        pyrogen.fit(pyrogen.VAE((6,), latent_dim=2, hidden=(16,)), _bits(), steps=2,
                    batch_size=32, progress=False, **options)  # fmt: skip


def test_training_reads_networks_without_param_statements_and_the_same_loss():
    """Inside ``unregistered_networks`` (every step of ``fit``) the VAE's networks make no
    ``pyro.param`` messages; its constrained values and its loss are unchanged."""
    from pyrogen.models.base import unregistered_networks

    vae = pyrogen.VAE((6,), latent_dim=2, hidden=(16,))
    x = _bits()[:32]
    vae.setup(x)

    def traced():
        pyro.set_rng_seed(1)
        trace = pyro.poutine.trace(vae.guide).get_trace(x)
        return [n for n, site in trace.nodes.items() if site["type"] == "param"], trace

    registered, _ = traced()
    with unregistered_networks():
        unregistered, _ = traced()
        pyro.set_rng_seed(2)
        quiet = vae.loss.differentiable_loss(vae.model, vae.guide, x, None, num_data=ROWS)
    pyro.set_rng_seed(2)
    loud = vae.loss.differentiable_loss(vae.model, vae.guide, x, None, num_data=ROWS)
    assert any("encoder" in name for name in registered)
    assert not any("encoder" in name for name in unregistered)
    assert torch.equal(quiet, loud)
