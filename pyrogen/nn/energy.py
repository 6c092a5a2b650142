"""Energy networks: a scalar E(x) per example, smooth in x so that its gradient (the score)
and that gradient's own gradient (score matching, Langevin dynamics) are well defined."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from pyrogen.checks import check_ints, check_trailing_shape
from pyrogen.nn.conv import KERNEL, PADDING, STRIDE, _image_shape
from pyrogen.nn.mlp import MLP

#: The energy networks :func:`build_energy` knows by name.
ENERGIES = ("mlp", "conv")


class MLPEnergy(nn.Module):
    """E(x) from an MLP with SiLU activations over the flattened example (no output bias).

    Args:
        data_shape: shape of one example.
        hidden: widths of the hidden layers.

    Shapes:
        x (..., ``*data_shape``) -> energies (...).

    Example:
        >>> MLPEnergy((2,), hidden=(16, 16))(torch.randn(5, 2)).shape
        torch.Size([5])
    """

    def __init__(self, data_shape: Sequence[int], hidden: Sequence[int] = (128, 128)) -> None:
        super().__init__()
        self.data_shape = check_ints("data_shape", data_shape, allow_empty=False)
        # SiLU, not ReLU: the score's gradient (score matching) must not vanish piecewise.
        self.net = MLP(math.prod(self.data_shape), check_ints("hidden", hidden), 1, nn.SiLU)
        # No output bias: a constant energy is absorbed in Z, and nothing could learn it.
        self.net[-1].register_parameter("bias", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x (..., ``*data_shape``). Returns: energies (...)."""
        check_trailing_shape("x", x, self.data_shape)
        flat = x.reshape(*x.shape[: x.dim() - len(self.data_shape)], -1)
        return self.net(flat).squeeze(-1)


class ConvEnergy(nn.Module):
    """E(x) of images from strided convolutions (SiLU) and a linear read-out.

    Args:
        data_shape: ``(C, H, W)``; H and W at least ``2 ** len(channels)``.
        channels: output channels of each stride-2 convolution.

    Shapes:
        x (..., C, H, W) -> energies (...).

    Example:
        >>> ConvEnergy((1, 8, 8), channels=(4, 8))(torch.rand(3, 1, 8, 8)).shape
        torch.Size([3])
    """

    def __init__(self, data_shape: Sequence[int], channels: Sequence[int] = (32, 64)) -> None:
        super().__init__()
        self.data_shape = _image_shape(data_shape)
        channels = check_ints("channels", channels, allow_empty=False)
        smallest = 2 ** len(channels)
        if min(self.data_shape[1:]) < smallest:
            raise ValueError(
                f"data_shape: expected H and W >= {smallest} for {len(channels)} stride-2 "
                f"convolutions, got {self.data_shape}"
            )
        layers: list[nn.Module] = []
        for c_in, c_out in zip((self.data_shape[0], *channels[:-1]), channels, strict=True):
            layers += [nn.Conv2d(c_in, c_out, KERNEL, STRIDE, PADDING), nn.SiLU()]
        self.conv = nn.Sequential(*layers, nn.Flatten())
        with torch.no_grad():  # the flattened size, read off a dry run
            features = self.conv(torch.zeros(1, *self.data_shape)).shape[-1]
        self.head = nn.Linear(features, 1, bias=False)  # a constant is absorbed in Z

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x (..., C, H, W). Returns: energies (...)."""
        check_trailing_shape("x", x, self.data_shape)
        leading = x.shape[:-3]
        images = x.reshape(math.prod(leading), *self.data_shape)
        return self.head(self.conv(images)).reshape(leading)


def build_energy(
    kind: str | nn.Module, data_shape: Sequence[int], hidden: Sequence[int] = (128, 128)
) -> nn.Module:
    """An energy network x (..., ``*data_shape``) -> (...).

    Args:
        kind: ``"mlp"`` (:class:`MLPEnergy`), ``"conv"`` (:class:`ConvEnergy`, needs
            ``data_shape`` (C, H, W)), or the user's own ``nn.Module``, returned unchanged.
        data_shape: shape of one example.
        hidden: hidden widths of ``"mlp"``; the channels of ``"conv"``.

    Returns:
        The energy module.

    Example:
        >>> build_energy("mlp", (2,), hidden=(8,)).__class__.__name__
        'MLPEnergy'
    """
    if isinstance(kind, nn.Module):
        return kind
    if not isinstance(kind, str) or kind not in ENERGIES:
        raise ValueError(f"energy: expected one of {ENERGIES} or an nn.Module, got {kind!r}")
    if kind == "conv":
        if len(data_shape) != 3:
            raise ValueError(f"energy: expected data_shape (C, H, W) for 'conv', got {data_shape}")
        return ConvEnergy(data_shape, channels=hidden)
    return MLPEnergy(data_shape, hidden=hidden)
