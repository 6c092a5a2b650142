"""Convolutional encoder and decoder for images of shape (C, H, W), any H and W."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from pyrogen.checks import check_int, check_ints, check_trailing_shape
from pyrogen.nn.context import join_context
from pyrogen.nn.mlp import MLP, _describe, loc_scale

# Each convolution halves H and W (rounding down); each transposed convolution doubles them.
KERNEL, STRIDE, PADDING = 4, 2, 1


def _image_shape(data_shape: Sequence[int]) -> tuple[int, int, int]:
    shape = check_ints("data_shape", data_shape, allow_empty=False)
    if len(shape) != 3:
        raise ValueError(f"data_shape: expected (C, H, W), got {shape}")
    return shape


def conv_features(
    data_shape: tuple[int, int, int],
    channels: Sequence[int],
    activation: Callable[[], nn.Module] = nn.ReLU,
) -> tuple[nn.Sequential, int]:
    """Strided convolutions (kernel 4, stride 2, padding 1), each followed by
    ``activation``, then a flatten: images (B, C, H, W) -> features (B, F); returns the
    module and F."""
    layers: list[nn.Module] = []
    for c_in, c_out in zip((data_shape[0], *channels[:-1]), channels, strict=True):
        layers += [nn.Conv2d(c_in, c_out, KERNEL, STRIDE, PADDING), activation()]
    features = nn.Sequential(*layers, nn.Flatten())
    # The flattened size depends on H and W through the rounding; a dry run reads it off.
    with torch.no_grad():
        size = features(torch.zeros(1, *data_shape)).shape[-1]
    return features, size


class ConvEncoder(nn.Module):
    """Amortized diagonal-Normal posterior q(z | x[, c]) from strided convolutions.

    Convolutions (kernel 4, stride 2, padding 1, ReLU) halve the image once per entry of
    ``channels``; the features are flattened, joined with the context, and an MLP with one
    hidden layer gives ``loc`` and ``scale``.

    Args:
        data_shape: ``(C, H, W)``; H and W at least ``2 ** len(channels)``.
        latent_dim: D, the size of z.
        channels: output channels of each convolution.
        hidden: width of the fully connected hidden layer.
        context_dim: size of a context vector c joined to the image features; 0 for none.

    Shapes:
        x (..., C, H, W), context (..., context_dim) broadcastable against x's leading dims
        -> ``(loc, scale)``, each (..., latent_dim), with ``scale > 0``.

    Example:
        >>> encoder = ConvEncoder((3, 32, 32), latent_dim=16)
        >>> loc, scale = encoder(torch.rand(8, 3, 32, 32))
        >>> loc.shape
        torch.Size([8, 16])
    """

    def __init__(
        self,
        data_shape: Sequence[int],
        latent_dim: int,
        channels: Sequence[int] = (32, 64),
        hidden: int = 256,
        context_dim: int = 0,
    ) -> None:
        super().__init__()
        self.data_shape = _image_shape(data_shape)
        self.latent_dim = check_int("latent_dim", latent_dim)
        self.context_dim = check_int("context_dim", context_dim, minimum=0)
        channels = check_ints("channels", channels, allow_empty=False)
        hidden = check_int("hidden", hidden)
        smallest = 2 ** len(channels)
        if min(self.data_shape[1:]) < smallest:
            raise ValueError(
                f"data_shape: expected H and W >= {smallest} for {len(channels)} stride-2 "
                f"convolutions, got {self.data_shape}"
            )
        self.conv, n_features = conv_features(self.data_shape, channels)
        self.head = MLP(n_features + self.context_dim, (hidden,), 2 * self.latent_dim)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Args: x (..., C, H, W); context (..., context_dim) or None.
        Returns: (loc, scale), each (..., latent_dim)."""
        check_trailing_shape("x", x, self.data_shape)
        leading = x.shape[:-3]
        features = self.conv(x.reshape(math.prod(leading), *self.data_shape))
        features = features.reshape(leading + features.shape[-1:])
        return loc_scale(self.head(join_context(features, context, self.context_dim)))

    def extra_repr(self) -> str:
        return _describe(self.data_shape, self.latent_dim, self.context_dim)


class ConvDecoder(nn.Module):
    """Transposed convolutions from z[, c] to one unconstrained output per pixel.

    An MLP with one hidden layer maps z (joined with the context) to a
    ``channels[0] x ceil(H / 2**n) x ceil(W / 2**n)`` feature map, ``n = len(channels)``;
    each transposed convolution (kernel 4, stride 2, padding 1) doubles it, ReLU between
    them, the last one to C channels; the result is cropped to exactly (H, W).

    Args:
        latent_dim: D, the size of z.
        data_shape: ``(C, H, W)``.
        channels: input channels of each transposed convolution, from z outwards.
        hidden: width of the fully connected hidden layer.
        context_dim: size of a context vector c concatenated to z; 0 for none.

    Shapes:
        z (..., latent_dim) with any leading dims, context (..., context_dim) broadcastable
        against them -> (..., C, H, W), the leading dims being the broadcast of both.

    Example:
        >>> decoder = ConvDecoder(16, (1, 31, 17))
        >>> decoder(torch.randn(5, 8, 16)).shape
        torch.Size([5, 8, 1, 31, 17])
    """

    def __init__(
        self,
        latent_dim: int,
        data_shape: Sequence[int],
        channels: Sequence[int] = (64, 32),
        hidden: int = 256,
        context_dim: int = 0,
    ) -> None:
        super().__init__()
        self.latent_dim = check_int("latent_dim", latent_dim)
        self.data_shape = _image_shape(data_shape)
        self.context_dim = check_int("context_dim", context_dim, minimum=0)
        channels = check_ints("channels", channels, allow_empty=False)
        hidden = check_int("hidden", hidden)
        scale = 2 ** len(channels)
        n_channels, height, width = self.data_shape
        self._start_shape = (channels[0], -(-height // scale), -(-width // scale))
        self.head = nn.Sequential(
            MLP(self.latent_dim + self.context_dim, (hidden,), math.prod(self._start_shape)),
            nn.ReLU(),
        )
        layers: list[nn.Module] = []
        for c_in, c_out in zip(channels, (*channels[1:], n_channels), strict=True):
            layers += [nn.ConvTranspose2d(c_in, c_out, KERNEL, STRIDE, PADDING), nn.ReLU()]
        self.deconv = nn.Sequential(*layers[:-1])

    def forward(self, z: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """Args: z (..., latent_dim); context (..., context_dim) or None.
        Returns: (..., C, H, W)."""
        check_trailing_shape("z", z, (self.latent_dim,))
        features = self.head(join_context(z, context, self.context_dim))
        leading = features.shape[:-1]
        image = self.deconv(features.reshape(math.prod(leading), *self._start_shape))
        _, height, width = self.data_shape
        return image[..., :height, :width].reshape(*leading, *self.data_shape)

    def extra_repr(self) -> str:
        return _describe(self.data_shape, self.latent_dim, self.context_dim)
