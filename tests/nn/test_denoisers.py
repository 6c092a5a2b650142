"""The diffusion denoisers: shapes for flat and image data of any size, the zero start,
gradients, the null label, the time embedding, dtypes, devices and the messages for bad
arguments and inputs."""

from __future__ import annotations

import doctest

import pytest
import torch
from torch import nn

import pyrogen.nn.denoisers
from pyrogen.nn.denoisers import MLPDenoiser, UNetDenoiser, timestep_embedding

CLASSES = 3
CASES = [("mlp", shape) for shape in [(2,), (5,), (3, 4)]] + [
    ("unet", shape) for shape in [(1, 28, 28), (3, 8, 8), (1, 7, 7), (2, 5, 3)]
]
IDS = [f"{kind}-{'x'.join(map(str, shape))}" for kind, shape in CASES]


def make(kind: str, data_shape: tuple[int, ...], num_classes: int | None = None) -> nn.Module:
    if kind == "mlp":
        return MLPDenoiser(data_shape, hidden=(16, 16), time_dim=8, num_classes=num_classes)
    return UNetDenoiser(data_shape, channels=8, time_dim=16, num_classes=num_classes, groups=4)


def last_layer(net: nn.Module) -> nn.Module:
    return net.net[-1] if isinstance(net, MLPDenoiser) else net.head[-1]


def perturb(net: nn.Module) -> nn.Module:
    """Random weights in the zero-initialised last layer, so the output depends on the input."""
    layer = last_layer(net)
    with torch.no_grad():
        layer.weight.normal_(0.0, 0.1)
        layer.bias.normal_(0.0, 0.1)
    return net


def inputs(data_shape: tuple[int, ...], batch: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(batch, *data_shape), torch.rand(batch)


# --- shapes and the zero start ------------------------------------------------------------
@pytest.mark.parametrize("num_classes", [None, CLASSES], ids=["unconditional", "conditional"])
@pytest.mark.parametrize("kind, data_shape", CASES, ids=IDS)
def test_output_has_the_shape_of_z_and_starts_at_zero(kind, data_shape, num_classes):
    net = make(kind, data_shape, num_classes)
    assert net.data_shape == data_shape and net.num_classes == num_classes
    z, t = inputs(data_shape)
    y = None if num_classes is None else torch.tensor([0, 1, 2, CLASSES])
    out = net(z, t, y)
    assert out.shape == z.shape and out.dtype == z.dtype
    assert (out == 0).all()
    assert perturb(net)(z, t, y).shape == z.shape


@pytest.mark.parametrize("kind, data_shape", CASES, ids=IDS)
def test_a_scalar_time_serves_the_whole_batch(kind, data_shape):
    net = perturb(make(kind, data_shape))
    z, _ = inputs(data_shape)
    torch.testing.assert_close(net(z, torch.tensor(0.3)), net(z, torch.full((4,), 0.3)))


@pytest.mark.parametrize("channels", [5, 6, 12])
def test_unet_takes_any_channel_count(channels):
    net = UNetDenoiser((1, 6, 6), channels=channels, multipliers=(1, 3), blocks=2, time_dim=8)
    z, t = inputs((1, 6, 6), batch=2)
    assert perturb(net)(z, t).shape == z.shape


# --- gradients ------------------------------------------------------------------------------
@pytest.mark.parametrize("kind, data_shape", [CASES[2], CASES[5]], ids=[IDS[2], IDS[5]])
def test_gradients_reach_every_parameter(kind, data_shape):
    net = perturb(make(kind, data_shape, CLASSES))
    z, t = inputs(data_shape)
    loss = (net(z, t, torch.tensor([0, 1, 2, CLASSES])) - z).square().mean()
    loss.backward()
    for name, parameter in net.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


# --- labels ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kind, data_shape", [CASES[0], CASES[4]], ids=[IDS[0], IDS[4]])
def test_no_label_is_the_null_label(kind, data_shape):
    net = perturb(make(kind, data_shape, CLASSES))
    z, t = inputs(data_shape)
    null = torch.full((4,), CLASSES)
    torch.testing.assert_close(net(z, t), net(z, t, null), rtol=0, atol=0)
    assert not torch.allclose(net(z, t), net(z, t, torch.zeros(4, dtype=torch.long)))


@pytest.mark.parametrize("kind, data_shape", [CASES[1], CASES[5]], ids=[IDS[1], IDS[5]])
def test_different_labels_give_different_outputs(kind, data_shape):
    net = perturb(make(kind, data_shape, CLASSES))
    z, t = inputs(data_shape, batch=1)
    outs = [net(z, t, torch.tensor([label])) for label in range(CLASSES + 1)]
    for i in range(len(outs)):
        for j in range(i):
            assert not torch.allclose(outs[i], outs[j]), (i, j)


# --- the time embedding -----------------------------------------------------------------------
def test_time_embedding_is_finite_bounded_and_distinct():
    t = torch.linspace(0.0, 1.0, 101)
    emb = timestep_embedding(t, 32)
    assert emb.shape == (101, 32) and emb.dtype == t.dtype
    assert torch.isfinite(emb).all() and emb.abs().max() <= 1.0
    assert (torch.cdist(emb, emb) + torch.eye(101)).min() > 1e-2
    torch.testing.assert_close(emb[:, :16].square() + emb[:, 16:].square(), torch.ones(101, 16))
    # A step of 1e-3 (one of the 1000 "steps") moves the fastest sinusoid by a full radian.
    assert (timestep_embedding(torch.tensor([0.5, 0.501]), 2).diff(dim=0).abs() > 0.1).all()


def test_time_embedding_keeps_dtype_and_shape():
    assert timestep_embedding(torch.rand(3, dtype=torch.float64), 4).dtype == torch.float64
    assert timestep_embedding(torch.rand(3, dtype=torch.float16), 4).dtype == torch.float16
    assert timestep_embedding(torch.tensor([0, 1]), 4).dtype == torch.get_default_dtype()
    assert timestep_embedding(torch.rand(2, 5), 6).shape == (2, 5, 6)


@pytest.mark.parametrize("kind, data_shape", [CASES[0], CASES[6]], ids=[IDS[0], IDS[6]])
def test_output_depends_on_time(kind, data_shape):
    net = perturb(make(kind, data_shape))
    z, _ = inputs(data_shape, batch=1)
    assert not torch.allclose(net(z, torch.tensor([0.2])), net(z, torch.tensor([0.7])))


# --- bad arguments and inputs -----------------------------------------------------------------
@pytest.mark.parametrize("dim", [7, 0, 1, -2, 2.0, True])
def test_time_embedding_needs_an_even_dim(dim):
    with pytest.raises(ValueError, match=r"^dim: expected"):
        timestep_embedding(torch.rand(3), dim)


@pytest.mark.parametrize("kind", ["mlp", "unet"])
def test_odd_time_dim_is_named(kind):
    network = MLPDenoiser if kind == "mlp" else UNetDenoiser
    with pytest.raises(ValueError, match=r"^time_dim: expected an even int >= 2, got 7"):
        network((1, 4, 4), time_dim=7)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"data_shape": (28, 28)}, r"^data_shape: expected \(C, H, W\), got \(28, 28\)"),
        ({"data_shape": (1, 1, 28, 28)}, r"^data_shape: expected \(C, H, W\)"),
        ({"data_shape": (1, 0, 28)}, r"^data_shape: expected"),
        ({"channels": 0}, r"^channels: expected a positive int"),
        ({"multipliers": ()}, r"^multipliers: expected a non-empty sequence"),
        ({"blocks": 0}, r"^blocks: expected a positive int"),
        ({"groups": 0}, r"^groups: expected a positive int"),
        ({"num_classes": 0}, r"^num_classes: expected a positive int"),
        ({"dropout": 1.0}, r"^dropout: expected a float in \[0, 1\)"),
        ({"dropout": -0.1}, r"^dropout: expected a float in \[0, 1\)"),
    ],
)
def test_bad_unet_arguments_are_named(kwargs, match):
    kwargs = {"data_shape": (1, 8, 8), **kwargs}
    with pytest.raises(ValueError, match=match):
        UNetDenoiser(kwargs.pop("data_shape"), **kwargs)


def test_bad_mlp_arguments_are_named():
    with pytest.raises(ValueError, match=r"^data_shape: expected a non-empty sequence"):
        MLPDenoiser(())
    with pytest.raises(ValueError, match=r"^hidden: expected"):
        MLPDenoiser((2,), hidden=(16, 0))
    with pytest.raises(ValueError, match=r"^num_classes: expected a positive int"):
        MLPDenoiser((2,), num_classes=2.5)
    with pytest.raises(TypeError, match=r"^activation: expected an nn.Module class"):
        MLPDenoiser((2,), activation=nn.SiLU())
    with pytest.raises(ValueError, match=r"^fourier_features: expected a non-negative integer"):
        MLPDenoiser((2,), fourier_features=-1)
    with pytest.raises(ValueError, match=r"^fourier_scale: expected a positive number"):
        MLPDenoiser((2,), fourier_features=4, fourier_scale=0.0)


def test_fourier_features_are_sines_and_cosines_of_fixed_projections():
    # The first layer sees [z, sin(z B), cos(z B), time embedding], B a saved buffer (D, F)
    # with entries of sd fourier_scale; without features there is no buffer.
    torch.manual_seed(0)
    net = MLPDenoiser((3,), hidden=(16,), time_dim=8, fourier_features=500, fourier_scale=2.0)
    assert net.fourier.shape == (3, 500) and "fourier" in net.state_dict()
    # 1500 N(0, 4) entries: the sd's standard error is ~2% of it
    assert net.fourier.std().item() == pytest.approx(2.0, rel=0.08)
    seen = []
    net.net[0].register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    z, t = inputs((3,))
    net(z, t)
    projected = z @ net.fourier
    assert torch.equal(seen[0][:, :3], z)
    assert torch.allclose(seen[0][:, 3:503], projected.sin())
    assert torch.allclose(seen[0][:, 503:1003], projected.cos())
    assert seen[0].shape == (4, 3 + 1000 + 8)
    plain = MLPDenoiser((3,), hidden=(16,), time_dim=8)
    assert plain.fourier is None and "fourier" not in plain.state_dict()


@pytest.mark.parametrize("kind, data_shape", [CASES[2], CASES[5]], ids=[IDS[2], IDS[5]])
def test_bad_inputs_are_named(kind, data_shape):
    conditional, unconditional = make(kind, data_shape, CLASSES), make(kind, data_shape)
    z, t = inputs(data_shape)
    with pytest.raises(
        ValueError, match=r"^y: expected labels in 0\.\.3 .* got values in \[0, 4\]"
    ):
        conditional(z, t, torch.tensor([0, 1, 2, CLASSES + 1]))
    with pytest.raises(ValueError, match=r"^y: expected labels in 0\.\.3 .* \[-1, 2\]"):
        conditional(z, t, torch.tensor([-1, 0, 1, 2]))
    with pytest.raises(ValueError, match=r"^y: expected integer labels of shape \(4,\)"):
        conditional(z, t, torch.tensor([0.0, 1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match=r"^y: expected integer labels of shape \(4,\)"):
        conditional(z, t, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"^y: expected None .*num_classes=None"):
        unconditional(z, t, torch.tensor([0, 1, 0, 1]))
    with pytest.raises(ValueError, match=r"^z: expected shape \(B, \*"):
        unconditional(z[0], t)
    with pytest.raises(ValueError, match=r"^z: expected shape \(B, \*"):
        unconditional(z.unsqueeze(0), t)
    with pytest.raises(ValueError, match=r"^z: expected shape \(B, \*"):
        unconditional(torch.randn(4, *data_shape[:-1], data_shape[-1] + 1), t)
    with pytest.raises(ValueError, match=r"^t: expected a tensor of shape \(4,\) or \(\)"):
        unconditional(z, t[:2])
    with pytest.raises(ValueError, match=r"^t: expected a tensor of shape \(4,\) or \(\)"):
        unconditional(z, 0.5)


# --- dtypes and devices -----------------------------------------------------------------------
@pytest.mark.parametrize("kind, data_shape", [CASES[2], CASES[6]], ids=[IDS[2], IDS[6]])
def test_float64(kind, data_shape):
    net = perturb(make(kind, data_shape, CLASSES)).double()
    z, t = inputs(data_shape)
    # A float32 t is read in the network's dtype.
    out = net(z.double(), t, torch.tensor([0, 1, 2, CLASSES]))
    assert out.dtype == torch.float64 and out.shape == z.shape and torch.isfinite(out).all()


@pytest.mark.parametrize("kind, data_shape", [CASES[2], CASES[6]], ids=[IDS[2], IDS[6]])
def test_no_tensor_is_made_on_a_fixed_device(kind, data_shape):
    # The meta device stands in for an accelerator: a tensor made on the CPU would not mix.
    net = make(kind, data_shape, CLASSES).to("meta")
    z, t = inputs(data_shape)
    out = net(z.to("meta"), t.to("meta"))
    assert out.device.type == "meta" and out.shape == z.shape


@pytest.mark.cuda
def test_conditional_unet_on_cuda():
    net = make("unet", (1, 7, 7), CLASSES).cuda()
    z, t = inputs((1, 7, 7))
    y = torch.tensor([0, 1, 2, CLASSES], device="cuda")
    assert net(z.cuda(), t.cuda(), y).device.type == "cuda"
    assert net(z.cuda(), t.cuda()).device.type == "cuda"
    assert timestep_embedding(t.cuda(), 8).device.type == "cuda"


def test_docstring_examples_run():
    results = doctest.testmod(
        pyrogen.nn.denoisers, extraglobs={"torch": torch}, optionflags=doctest.ELLIPSIS
    )
    assert results.attempted > 0 and results.failed == 0
