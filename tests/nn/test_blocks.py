"""The torch.nn building blocks: shapes for flat and image data, leading dims, context,
gradients, dtype moves, dispatch by name and the messages for bad arguments and inputs."""

from __future__ import annotations

import doctest

import pytest
import torch
from torch import nn

import pyrogen.nn
import pyrogen.nn.conv
import pyrogen.nn.mlp
from pyrogen.nn import (
    MLP,
    ConvDecoder,
    ConvEncoder,
    GaussianEncoder,
    MLPDecoder,
    build_decoder,
    build_encoder,
)
from pyrogen.nn.mlp import MIN_SCALE, loc_scale

LATENT = 4
CONTEXT = 3
SHAPES = [(784,), (1, 28, 28), (3, 32, 32), (1, 31, 17)]
CASES = [("mlp", shape) for shape in SHAPES] + [
    ("conv", shape) for shape in SHAPES if len(shape) == 3
]
IDS = [f"{kind}-{'x'.join(map(str, shape))}" for kind, shape in CASES]


def make_encoder(kind: str, data_shape: tuple[int, ...], context_dim: int = 0) -> nn.Module:
    if kind == "mlp":
        return GaussianEncoder(data_shape, LATENT, hidden=(16,), context_dim=context_dim)
    return ConvEncoder(data_shape, LATENT, channels=(4, 8), hidden=16, context_dim=context_dim)


def make_decoder(kind: str, data_shape: tuple[int, ...], context_dim: int = 0) -> nn.Module:
    if kind == "mlp":
        return MLPDecoder(LATENT, data_shape, hidden=(16,), context_dim=context_dim)
    return ConvDecoder(LATENT, data_shape, channels=(8, 4), hidden=16, context_dim=context_dim)


# --- shapes -----------------------------------------------------------------------------
@pytest.mark.parametrize("kind, data_shape", CASES, ids=IDS)
def test_encoder_gives_loc_and_positive_scale(kind, data_shape):
    encoder = make_encoder(kind, data_shape)
    loc, scale = encoder(torch.rand(6, *data_shape))
    assert loc.shape == scale.shape == (6, LATENT)
    assert (scale > 0).all()
    loc, scale = encoder(torch.rand(2, 3, *data_shape))
    assert loc.shape == scale.shape == (2, 3, LATENT)


@pytest.mark.parametrize("kind, data_shape", CASES, ids=IDS)
def test_decoder_keeps_any_leading_dims(kind, data_shape):
    decoder = make_decoder(kind, data_shape)
    assert decoder(torch.randn(6, LATENT)).shape == (6, *data_shape)
    assert decoder(torch.randn(5, 7, LATENT)).shape == (5, 7, *data_shape)
    assert decoder(torch.randn(LATENT)).shape == data_shape


@pytest.mark.parametrize("kind, data_shape", CASES, ids=IDS)
def test_leading_dims_are_independent_rows(kind, data_shape):
    """Flattening and restoring the leading dims never mixes one row into another."""
    decoder, encoder = make_decoder(kind, data_shape), make_encoder(kind, data_shape)
    z = torch.randn(2, 3, LATENT)
    x = decoder(z)
    torch.testing.assert_close(x[1, 2], decoder(z[1, 2:3])[0])
    loc, scale = encoder(x)
    row_loc, row_scale = encoder(x[1, 2:3])
    torch.testing.assert_close(loc[1, 2], row_loc[0])
    torch.testing.assert_close(scale[1, 2], row_scale[0])


def test_scale_floor_keeps_the_normal_valid():
    loc, scale = loc_scale(torch.full((2, 2 * LATENT), -200.0))
    assert loc.shape == scale.shape == (2, LATENT)
    assert torch.all(scale == MIN_SCALE)
    assert torch.isfinite(torch.distributions.Normal(loc, scale).log_prob(loc)).all()


def test_mlp_has_no_activation_after_the_last_layer():
    net = MLP(10, [8, 6], 3, activation=nn.Tanh)
    assert [type(layer) for layer in net] == [nn.Linear, nn.Tanh, nn.Linear, nn.Tanh, nn.Linear]
    assert [layer.out_features for layer in net if isinstance(layer, nn.Linear)] == [8, 6, 3]
    assert [type(layer) for layer in MLP(10, (), 3)] == [nn.Linear]
    assert net(torch.randn(2, 5, 10)).shape == (2, 5, 3)


def test_encoder_and_decoder_take_the_activation():
    # Burda et al. (2016)'s networks: 784-200-200-50 with tanh units.
    encoder = GaussianEncoder((784,), 50, hidden=(200, 200), activation=nn.Tanh)
    decoder = MLPDecoder(50, (784,), hidden=(200, 200), activation=nn.Tanh)
    for net in (encoder.net, decoder.net):
        assert [type(layer) for layer in net] == [nn.Linear, nn.Tanh] * 2 + [nn.Linear]
    loc, scale = encoder(torch.rand(6, 784))
    assert loc.shape == scale.shape == (6, 50) and (scale > 0).all()
    assert decoder(torch.randn(3, 6, 50)).shape == (3, 6, 784)
    default = [type(layer) for layer in GaussianEncoder((784,), 50, hidden=(8, 8)).net]
    assert default == [nn.Linear, nn.ReLU] * 2 + [nn.Linear]
    assert nn.ReLU in {type(layer) for layer in MLPDecoder(50, (784,)).net}
    with pytest.raises(TypeError, match=r"activation: expected an nn.Module class"):
        MLPDecoder(LATENT, (784,), activation=nn.Tanh())


@pytest.mark.parametrize("data_shape", [(1, 28, 28), (1, 31, 17), (3, 30, 29)])
def test_conv_decoder_crops_to_exactly_the_data_shape(data_shape):
    assert ConvDecoder(LATENT, data_shape)(torch.randn(2, LATENT)).shape == (2, *data_shape)


# --- context ----------------------------------------------------------------------------
@pytest.mark.parametrize("kind, data_shape", CASES, ids=IDS)
def test_context_changes_the_output_and_broadcasts(kind, data_shape):
    encoder = make_encoder(kind, data_shape, CONTEXT)
    decoder = make_decoder(kind, data_shape, CONTEXT)
    x, z = torch.rand(7, *data_shape), torch.randn(5, 7, LATENT)
    one, other = torch.eye(CONTEXT)[torch.zeros(7, dtype=torch.long)], torch.randn(7, CONTEXT)
    assert not torch.allclose(encoder(x, one)[0], encoder(x, other)[0])
    assert not torch.allclose(decoder(z, one), decoder(z, other))
    # One context row per example serves every sample of z (importance sampling).
    out = decoder(z, other)
    assert out.shape == (5, 7, *data_shape)
    torch.testing.assert_close(out, decoder(z, other.expand(5, 7, CONTEXT)))
    # An enumerated label (K, 1, context) against a batch of z gives (K, batch, ...).
    labels = torch.eye(CONTEXT).unsqueeze(1)
    assert decoder(z[0], labels).shape == (CONTEXT, 7, *data_shape)
    # Integer one-hots are accepted as they come.
    torch.testing.assert_close(decoder(z, one.long()), decoder(z, one))


# --- gradients and dtype ----------------------------------------------------------------
@pytest.mark.parametrize("kind, data_shape", CASES, ids=IDS)
def test_gradients_reach_every_parameter(kind, data_shape):
    encoder = make_encoder(kind, data_shape, CONTEXT)
    decoder = make_decoder(kind, data_shape, CONTEXT)
    context = torch.randn(6, CONTEXT)
    loc, scale = encoder(torch.rand(6, *data_shape), context)
    x = decoder(loc + scale * torch.randn_like(loc), context)
    x.square().mean().backward()
    for name, parameter in [*encoder.named_parameters(), *decoder.named_parameters()]:
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


@pytest.mark.parametrize("kind, data_shape", CASES, ids=IDS)
def test_to_float64(kind, data_shape):
    encoder = make_encoder(kind, data_shape, CONTEXT).to(torch.float64)
    decoder = make_decoder(kind, data_shape, CONTEXT).to(torch.float64)
    context = torch.eye(CONTEXT)[torch.tensor([0, 1])]
    loc, scale = encoder(torch.rand(2, *data_shape, dtype=torch.float64), context)
    assert loc.dtype == scale.dtype == torch.float64
    assert decoder(loc, context).dtype == torch.float64


# --- dispatch -----------------------------------------------------------------------------
def test_build_by_name():
    assert isinstance(build_encoder("mlp", (784,), LATENT), GaussianEncoder)
    assert isinstance(build_encoder("conv", (1, 28, 28), LATENT), ConvEncoder)
    assert isinstance(build_decoder("mlp", LATENT, (1, 28, 28)), MLPDecoder)
    decoder = build_decoder("conv", LATENT, (1, 28, 28), context_dim=CONTEXT, hidden=32)
    assert isinstance(decoder, ConvDecoder) and decoder.context_dim == CONTEXT
    assert decoder.head[0][0].out_features == 32
    encoder = build_encoder("conv", (1, 28, 28), LATENT, hidden=[32])  # a VAE's widths setting
    assert encoder.head[0].out_features == 32
    encoder = build_encoder("mlp", (784,), LATENT, context_dim=CONTEXT, hidden=32)
    assert encoder.context_dim == CONTEXT
    assert [m.out_features for m in encoder.net if isinstance(m, nn.Linear)] == [32, 2 * LATENT]
    encoder = build_encoder("mlp", (784,), LATENT, hidden=[32, 16])
    assert [m.out_features for m in encoder.net if isinstance(m, nn.Linear)] == [32, 16, 8]


def test_build_passes_a_module_through():
    own = nn.Linear(3, 3)
    assert build_encoder(own, (784,), LATENT) is own
    assert build_decoder(own, LATENT, (784,)) is own


@pytest.mark.parametrize(
    "build, match",
    [
        (
            lambda: build_encoder("conv", (784,), LATENT),
            r"encoder: expected data_shape \(C, H, W\) for 'conv', got \(784,\)",
        ),
        (
            lambda: build_decoder("conv", LATENT, [784]),
            r"decoder: expected data_shape \(C, H, W\) for 'conv', got \(784,\)",
        ),
        (
            lambda: build_encoder("resnet", (784,), LATENT),
            r"encoder: expected one of \('mlp', 'conv'\) or an nn.Module, got 'resnet'",
        ),
        (
            lambda: build_decoder(MLPDecoder, LATENT, (784,)),
            r"decoder: expected one of \('mlp', 'conv'\) or an nn.Module, got <class",
        ),
        (
            lambda: build_encoder("conv", (1, 28, 28), LATENT, hidden=(64, 32)),
            r"hidden: expected an int or one width for 'conv' .*, got \(64, 32\)",
        ),
    ],
)
def test_build_rejects_unknown_or_mismatched_kinds(build, match):
    with pytest.raises(ValueError, match=match):
        build()


# --- bad arguments and inputs -------------------------------------------------------------
@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: MLP(0, [8], 3), r"in_features: expected a positive integer, got 0"),
        (
            lambda: MLP(4, [8, -1], 3),
            r"hidden: expected a sequence .* got \[8, -1\]",
        ),
        (lambda: MLP(4, 8, 3), r"hidden: expected a sequence of positive integers, got 8"),
        (lambda: MLP(4, [8], True), r"out_features: expected a positive integer, got True"),
        (lambda: GaussianEncoder((), LATENT), r"data_shape: expected a non-empty sequence"),
        (lambda: GaussianEncoder((784,), 0), r"latent_dim: expected a positive integer, got 0"),
        (lambda: MLPDecoder(LATENT, (0, 5)), r"data_shape: expected a non-empty .* got \(0, 5\)"),
        (
            lambda: MLPDecoder(LATENT, (784,), context_dim=-1),
            r"context_dim: expected a non-negative integer",
        ),
        (lambda: ConvEncoder((784,), LATENT), r"data_shape: expected \(C, H, W\), got \(784,\)"),
        (lambda: ConvDecoder(LATENT, (1, 28, 28), channels=()), r"channels: expected a non-empty"),
        (lambda: ConvDecoder(LATENT, (1, 28, 28), hidden=2.5), r"hidden: expected a positive int"),
        (
            lambda: ConvEncoder((1, 3, 28), LATENT),
            r"data_shape: expected H and W >= 4 for 2 stride-2 convolutions, got \(1, 3, 28\)",
        ),
    ],
)
def test_bad_arguments_are_named(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_activation_must_be_a_module_class():
    with pytest.raises(TypeError, match=r"activation: expected an nn.Module class"):
        MLP(4, [8], 3, activation=nn.ReLU())


@pytest.mark.parametrize("kind", ["mlp", "conv"])
def test_inputs_of_the_wrong_shape_are_named(kind):
    encoder = make_encoder(kind, (1, 28, 28))
    decoder = make_decoder(kind, (1, 28, 28), CONTEXT)
    with pytest.raises(ValueError, match=r"x: expected trailing shape \(1, 28, 28\), got shape"):
        encoder(torch.rand(8, 784))
    with pytest.raises(ValueError, match=r"z: expected trailing shape \(4,\), got shape \(8, 5\)"):
        decoder(torch.randn(8, 5), torch.randn(8, CONTEXT))
    with pytest.raises(ValueError, match=r"context: expected a tensor of shape \(\.\.\., 3\)"):
        decoder(torch.randn(8, LATENT))
    with pytest.raises(ValueError, match=r"context: expected None .* context_dim=0"):
        encoder(torch.rand(8, 1, 28, 28), torch.randn(8, CONTEXT))
    with pytest.raises(ValueError, match=r"context: expected trailing shape \(3,\), got"):
        decoder(torch.randn(8, LATENT), torch.randn(8, 2))
    with pytest.raises(ValueError, match=r"context: expected leading dims broadcastable to \(8,\)"):
        decoder(torch.randn(8, LATENT), torch.randn(5, CONTEXT))
    with pytest.raises(TypeError, match=r"z: expected a torch.Tensor, got list"):
        decoder([0.0] * LATENT, torch.randn(CONTEXT))


@pytest.mark.parametrize("module", [pyrogen.nn, pyrogen.nn.mlp, pyrogen.nn.conv])
def test_docstring_examples_run(module):
    results = doctest.testmod(module, extraglobs={"torch": torch}, optionflags=doctest.ELLIPSIS)
    assert results.attempted > 0 and results.failed == 0
