"""Plain ``torch.nn`` building blocks for the model families (no Pyro inside).

Encoders map data x (..., ``*data_shape``) and an optional context c (..., context_dim) to the
``(loc, scale)`` of a diagonal Normal over z; decoders map z (..., latent_dim) and c to
unconstrained outputs (..., ``*data_shape``). Leading dims pass through, so the same network
serves a minibatch, importance samples and Pyro's particle or enumeration dims.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from pyrogen.nn.autoregressive import MADE, CausalConvNet, GatedPixelCNN, MaskedConv
from pyrogen.nn.context import one_hot
from pyrogen.nn.conv import ConvDecoder, ConvEncoder
from pyrogen.nn.denoisers import MLPDenoiser, UNetDenoiser, timestep_embedding
from pyrogen.nn.flows import FLOWS, FlowDistribution, build_flow
from pyrogen.nn.mlp import MLP, GaussianEncoder, MLPDecoder
from pyrogen.nn.schedules import SCHEDULES, NoiseSchedule

#: The network kinds :func:`build_encoder` and :func:`build_decoder` know by name.
KINDS = ("mlp", "conv")


def build_encoder(
    kind: str | nn.Module,
    data_shape: Sequence[int],
    latent_dim: int,
    context_dim: int = 0,
    hidden: int | Sequence[int] | None = None,
) -> nn.Module:
    """An encoder x (..., ``*data_shape``)[, c (..., context_dim)] -> (loc, scale), (..., L).

    Args:
        kind: ``"mlp"`` (:class:`GaussianEncoder`), ``"conv"`` (:class:`ConvEncoder`, needs
            ``data_shape`` (C, H, W)), or the user's own ``nn.Module``, returned unchanged.
        data_shape: shape of one example.
        latent_dim: D, the size of z.
        context_dim: size of the context vector; 0 for none.
        hidden: hidden widths (an int is one layer) for ``"mlp"``; the width of the one
            fully connected layer (an int or a 1-sequence) for ``"conv"``; None for the
            class's default.

    Returns:
        The encoder module.

    Example:
        >>> build_encoder("conv", (1, 28, 28), latent_dim=8).__class__.__name__
        'ConvEncoder'
    """
    if isinstance(kind, nn.Module):
        return kind
    options = _options("encoder", kind, data_shape, hidden)
    network = GaussianEncoder if kind == "mlp" else ConvEncoder
    return network(data_shape, latent_dim, context_dim=context_dim, **options)


def build_decoder(
    kind: str | nn.Module,
    latent_dim: int,
    data_shape: Sequence[int],
    context_dim: int = 0,
    hidden: int | Sequence[int] | None = None,
) -> nn.Module:
    """A decoder z (..., latent_dim)[, c (..., context_dim)] -> outputs (..., ``*data_shape``).

    Args:
        kind: ``"mlp"`` (:class:`MLPDecoder`), ``"conv"`` (:class:`ConvDecoder`, needs
            ``data_shape`` (C, H, W)), or the user's own ``nn.Module``, returned unchanged.
        latent_dim: D, the size of z.
        data_shape: shape of one example.
        context_dim: size of the context vector; 0 for none.
        hidden: hidden widths (an int is one layer) for ``"mlp"``; the width of the one
            fully connected layer (an int or a 1-sequence) for ``"conv"``; None for the
            class's default.

    Returns:
        The decoder module.

    Example:
        >>> build_decoder("mlp", 8, (784,), hidden=256).__class__.__name__
        'MLPDecoder'
    """
    if isinstance(kind, nn.Module):
        return kind
    options = _options("decoder", kind, data_shape, hidden)
    network = MLPDecoder if kind == "mlp" else ConvDecoder
    return network(latent_dim, data_shape, context_dim=context_dim, **options)


def _options(
    role: str, kind: object, data_shape: Sequence[int], hidden: int | Sequence[int] | None
) -> dict[str, int | Sequence[int]]:
    """Check ``kind`` against ``data_shape`` and turn ``hidden`` into the class's argument."""
    if not isinstance(kind, str) or kind not in KINDS:
        raise ValueError(f"{role}: expected one of {KINDS} or an nn.Module, got {kind!r}")
    if kind == "conv" and isinstance(data_shape, Sequence) and len(data_shape) != 3:
        raise ValueError(
            f"{role}: expected data_shape (C, H, W) for 'conv', got {tuple(data_shape)}"
        )
    if hidden is None:
        return {}
    if kind == "mlp":
        return {"hidden": (hidden,) if isinstance(hidden, int) else hidden}
    # One widths setting serves both kinds: conv has a single fully connected layer.
    if isinstance(hidden, Sequence) and not isinstance(hidden, str):
        if len(hidden) != 1:
            raise ValueError(
                f"hidden: expected an int or one width for 'conv' (its one fully connected "
                f"layer), got {tuple(hidden)}"
            )
        (hidden,) = hidden
    return {"hidden": hidden}


__all__ = [
    "FLOWS",
    "SCHEDULES",
    "KINDS",
    "MADE",
    "MLP",
    "CausalConvNet",
    "GatedPixelCNN",
    "MaskedConv",
    "ConvDecoder",
    "ConvEncoder",
    "FlowDistribution",
    "GaussianEncoder",
    "MLPDecoder",
    "MLPDenoiser",
    "NoiseSchedule",
    "UNetDenoiser",
    "build_decoder",
    "build_encoder",
    "build_flow",
    "one_hot",
    "timestep_embedding",
]
