"""``pyrogen.fit(..., compile=True)``: the recorded and replayed step gives the eager
step's losses and parameters, and falls back to eager training, with a warning, for a step
that is not one fixed graph."""

from __future__ import annotations

import shutil

import pyro
import pytest
import torch
from torch.fx.experimental.proxy_tensor import make_fx

import pyrogen
from pyrogen.infer.compiled import ReplayedLoss, lift_random_draws

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
        ({"compile": "yes"}, "compile: expected True, False, 'replay', 'inductor', got 'yes'"),
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


needs_compiler = pytest.mark.skipif(
    shutil.which("g++") is None, reason="torch.compile on a CPU needs a C++ compiler (g++)"
)


@needs_compiler
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def test_an_inductor_fit_gives_the_eager_losses_to_float_tolerance(device, recwarn):
    # One batch shape (full batch), so one compilation. Inductor's fused arithmetic rounds
    # differently from eager kernels (float32: ~1e-7 relative per operation), while the
    # random draws are the eager ones exactly: losses agree to ~1e-6 relative after a few
    # Adam steps, far below the 1e-2 a different draw of z would move this VAE's loss.
    x = _bits()
    options = {"steps": 4, "progress": False, "seed": 3, "device": device}
    eager, compiled = (pyrogen.VAE((6,), latent_dim=2, hidden=(16,)) for _ in range(2))
    expected = pyrogen.fit(eager, x, **options)
    result = pyrogen.fit(compiled, x, compile="inductor", **options)
    assert not [w for w in recwarn if str(w.message).startswith("compile:")]
    torch.testing.assert_close(result.losses, expected.losses, rtol=1e-5, atol=0)
    for name, value in eager.state_dict().items():
        torch.testing.assert_close(compiled.state_dict()[name], value, rtol=1e-4, atol=1e-6)


def test_random_draws_are_lifted_out_unless_they_depend_on_trained_tensors():
    def loss(tensors, x, y):
        (w,) = tensors
        return (w * x + torch.randn_like(x)).sum() + torch.normal(w, 1.0).sum()

    w = torch.ones(3, requires_grad=True)
    graph = make_fx(loss)([w], torch.ones(3), None)
    with pytest.raises(ValueError, match="depends on trained parameters"):
        lift_random_draws(graph, trained=1)
    lift_random_draws(graph, trained=0)  # as buffers, the draws may be made eagerly


class _UnusedWork(torch.nn.Module):
    """A loss that computes what it never reads (an index range, a draw)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(3))

    def forward(self, x, y, num_data):
        torch.arange(x.shape[0])  # like a plate's subsample indices
        torch.randint(10, (4,))  # a draw nothing reads: it still advances the stream
        return (self.w * x + torch.randn_like(x)).sum()


def test_a_replay_drops_unread_operations_but_keeps_every_draw():
    x = torch.ones(5, 3)
    replayed = ReplayedLoss(_UnusedWork(), "UnusedWork")
    with pyro.validation_enabled(False):
        torch.manual_seed(0)
        replayed(x, None, 5)  # records (and checks) at this random state
        graph = next(iter(replayed.recordings.values()))
        targets = [node.target for node in graph.graph.nodes if node.op == "call_function"]
        assert torch.ops.aten.arange.default not in targets  # read by nothing: dropped
        assert any("randint" in str(target) for target in targets)  # a draw: kept
        torch.manual_seed(1)
        replayed_loss = replayed(x, None, 5)
        after_replay = torch.rand(1)
        torch.manual_seed(1)
        eager_loss = replayed.trainer(x, None, 5)
        after_eager = torch.rand(1)
    assert torch.equal(replayed_loss, eager_loss) and torch.equal(after_replay, after_eager)
