"""Fully connected networks: an MLP, a Gaussian encoder and a decoder for data of any shape."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pyrogen.checks import check_int, check_ints, check_trailing_shape
from pyrogen.nn.context import join_context

#: Floor added to every encoder scale (see :func:`loc_scale`).
MIN_SCALE = 1e-5


def loc_scale(raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a network output (..., 2 * D) into a Normal's ``loc`` and ``scale``, each (..., D)."""
    loc, raw_scale = raw.chunk(2, dim=-1)
    # softplus rather than exp: positive without overflowing for large raw values; the floor
    # keeps the Normal valid (scale > 0, finite log-density) when it underflows.
    return loc, F.softplus(raw_scale) + MIN_SCALE


class MLP(nn.Sequential):
    """Linear layers with an activation between them (none after the last).

    Args:
        in_features: size of the input's last dim.
        hidden: widths of the hidden layers, first to last; ``()`` gives one Linear layer.
        out_features: size of the output's last dim.
        activation: the activation class, instantiated once per hidden layer.

    Shapes:
        input (..., in_features) -> output (..., out_features).

    Example:
        >>> net = MLP(10, [64, 64], 3)
        >>> net(torch.randn(5, 10)).shape
        torch.Size([5, 3])
    """

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int],
        out_features: int,
        activation: type[nn.Module] = nn.ReLU,
    ) -> None:
        in_features = check_int("in_features", in_features)
        hidden = check_ints("hidden", hidden)
        out_features = check_int("out_features", out_features)
        if not (isinstance(activation, type) and issubclass(activation, nn.Module)):
            raise TypeError(
                f"activation: expected an nn.Module class such as nn.ReLU, got {activation!r}"
            )
        sizes = (in_features, *hidden, out_features)
        layers: list[nn.Module] = [nn.Linear(sizes[0], sizes[1])]
        for size_in, size_out in zip(sizes[1:-1], sizes[2:], strict=True):
            layers += [activation(), nn.Linear(size_in, size_out)]
        super().__init__(*layers)
        self.in_features = in_features
        self.out_features = out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x (..., in_features). Returns: (..., out_features)."""
        check_trailing_shape("x", x, (self.in_features,))
        return super().forward(x)


class GaussianEncoder(nn.Module):
    """Amortized diagonal-Normal posterior q(z | x[, c]) from an MLP on the flattened data.

    Args:
        data_shape: shape of one example, e.g. ``(784,)`` or ``(1, 28, 28)``.
        latent_dim: D, the size of z.
        hidden: widths of the MLP's hidden layers.
        context_dim: size of a context vector c concatenated to the flattened x (a one-hot
            label in a conditional VAE); 0 for none.
        activation: the MLP's activation class, one instance per hidden layer (e.g.
            ``nn.Tanh`` for the networks of Burda et al., 2016).

    Shapes:
        x (..., ``*data_shape``), context (..., context_dim) broadcastable against x's leading
        dims -> ``(loc, scale)``, each (..., latent_dim), with ``scale > 0``.

    Example:
        >>> encoder = GaussianEncoder((1, 28, 28), latent_dim=8, hidden=[128])
        >>> loc, scale = encoder(torch.rand(32, 1, 28, 28))
        >>> loc.shape, bool((scale > 0).all())
        (torch.Size([32, 8]), True)
    """

    def __init__(
        self,
        data_shape: Sequence[int],
        latent_dim: int,
        hidden: Sequence[int] = (400,),
        context_dim: int = 0,
        activation: type[nn.Module] = nn.ReLU,
    ) -> None:
        super().__init__()
        self.data_shape = check_ints("data_shape", data_shape, allow_empty=False)
        self.latent_dim = check_int("latent_dim", latent_dim)
        self.context_dim = check_int("context_dim", context_dim, minimum=0)
        self.net = MLP(
            math.prod(self.data_shape) + self.context_dim,
            hidden,
            2 * self.latent_dim,
            activation=activation,
        )

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Args: x (..., ``*data_shape``); context (..., context_dim) or None.
        Returns: (loc, scale), each (..., latent_dim)."""
        check_trailing_shape("x", x, self.data_shape)
        features = x.flatten(start_dim=x.ndim - len(self.data_shape))
        return loc_scale(self.net(join_context(features, context, self.context_dim)))

    def extra_repr(self) -> str:
        return _describe(self.data_shape, self.latent_dim, self.context_dim)


class MLPDecoder(nn.Module):
    """An MLP from z[, c] to one unconstrained output per data element (logits or means).

    Args:
        latent_dim: D, the size of z.
        data_shape: shape of one example, e.g. ``(784,)`` or ``(1, 28, 28)``.
        hidden: widths of the MLP's hidden layers, from z outwards.
        context_dim: size of a context vector c concatenated to z; 0 for none.
        activation: the MLP's activation class, one instance per hidden layer (e.g.
            ``nn.Tanh`` for the networks of Burda et al., 2016).

    Shapes:
        z (..., latent_dim) with any leading dims (importance samples, Pyro's particle or
        enumeration dims), context (..., context_dim) broadcastable against them ->
        (..., ``*data_shape``), the leading dims being the broadcast of both.

    Example:
        >>> decoder = MLPDecoder(8, (1, 28, 28), hidden=[128])
        >>> decoder(torch.randn(5, 32, 8)).shape
        torch.Size([5, 32, 1, 28, 28])
    """

    def __init__(
        self,
        latent_dim: int,
        data_shape: Sequence[int],
        hidden: Sequence[int] = (400,),
        context_dim: int = 0,
        activation: type[nn.Module] = nn.ReLU,
    ) -> None:
        super().__init__()
        self.latent_dim = check_int("latent_dim", latent_dim)
        self.data_shape = check_ints("data_shape", data_shape, allow_empty=False)
        self.context_dim = check_int("context_dim", context_dim, minimum=0)
        self.net = MLP(
            self.latent_dim + self.context_dim,
            hidden,
            math.prod(self.data_shape),
            activation=activation,
        )

    def forward(self, z: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """Args: z (..., latent_dim); context (..., context_dim) or None.
        Returns: (..., ``*data_shape``)."""
        check_trailing_shape("z", z, (self.latent_dim,))
        return self.net(join_context(z, context, self.context_dim)).unflatten(-1, self.data_shape)

    def extra_repr(self) -> str:
        return _describe(self.data_shape, self.latent_dim, self.context_dim)


def _describe(data_shape: tuple[int, ...], latent_dim: int, context_dim: int) -> str:
    return f"data_shape={data_shape}, latent_dim={latent_dim}, context_dim={context_dim}"
