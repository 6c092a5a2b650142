"""A discriminator (or critic): examples x (..., ``*data_shape``) and an optional context c
-> one unbounded score per example, as an adversarial objective needs."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from pyrogen.checks import check_int, check_ints, check_trailing_shape
from pyrogen.nn.context import join_context
from pyrogen.nn.conv import conv_features
from pyrogen.nn.mlp import MLP


class Critic(nn.Module):
    """Scores examples: an MLP on the flattened example (``kind="mlp"``, any shape) or
    strided convolutions with LeakyReLU (``kind="conv"``, DCGAN-style, images (C, H, W)),
    then the context is joined and a small MLP gives the score.

    Args:
        data_shape: shape of one example.
        kind: ``"mlp"`` or ``"conv"``.
        hidden: hidden widths of the MLP (and of the head after the convolutions).
        channels: output channels of each convolution (``"conv"``).
        context_dim: size of a context vector joined to the features (one-hot labels of a
            conditional GAN); 0 for none.

    Shapes:
        x (..., ``*data_shape``), context (..., context_dim) -> scores (...,).

    Example:
        >>> critic = Critic((1, 8, 8), "conv", hidden=(16,), channels=(8, 16))
        >>> critic(torch.zeros(5, 1, 8, 8)).shape
        torch.Size([5])
    """

    def __init__(
        self,
        data_shape: Sequence[int],
        kind: str = "mlp",
        hidden: Sequence[int] = (128, 128),
        channels: Sequence[int] = (32, 64),
        context_dim: int = 0,
    ) -> None:
        super().__init__()
        self.data_shape = check_ints("data_shape", data_shape, allow_empty=False)
        self.context_dim = check_int("context_dim", context_dim, minimum=0)
        if kind == "conv":
            if len(self.data_shape) != 3:
                raise ValueError(
                    f"data_shape: expected (C, H, W) for a conv critic, got {self.data_shape}"
                )
            self.features, size = conv_features(
                self.data_shape, check_ints("channels", channels, allow_empty=False),
                lambda: nn.LeakyReLU(0.2),
            )  # fmt: skip
        elif kind == "mlp":
            self.features, size = nn.Flatten(), math.prod(self.data_shape)
        else:
            raise ValueError(f"kind: expected 'mlp' or 'conv', got {kind!r}")
        self.head = MLP(size + self.context_dim, check_ints("hidden", hidden), 1, nn.LeakyReLU)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        check_trailing_shape("x", x, self.data_shape)
        leading = x.shape[: x.dim() - len(self.data_shape)]
        rows = x.reshape(math.prod(leading), *self.data_shape)
        features = self.features(rows).reshape(*leading, -1)
        return self.head(join_context(features, context, self.context_dim)).squeeze(-1)
