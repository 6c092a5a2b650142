"""A discriminator (or critic): examples x (..., ``*data_shape``) and an optional context c
-> one unbounded score per example, as an adversarial objective needs; with ``outputs=C``
the same network is a small classifier (C logits) whose last hidden layer embeds examples
(the Fréchet distance of :mod:`pyrogen.diagnostics.feature_classifier`)."""

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
        outputs: values per example: 1 (a score) or C (a classifier's logits).

    Shapes:
        x (..., ``*data_shape``), context (..., context_dim) -> scores (...,), or logits
        (..., outputs) where ``outputs > 1``; :meth:`embed`: (..., hidden[-1]).

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
        outputs: int = 1,
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
        self.outputs = check_int("outputs", outputs)
        hidden = check_ints("hidden", hidden)
        self.head = MLP(size + self.context_dim, hidden, self.outputs, nn.LeakyReLU)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        scores = self.head(self._joined(x, context))
        return scores.squeeze(-1) if self.outputs == 1 else scores

    def embed(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """The last hidden layer's activations (..., hidden[-1]) (the joined input features
        where ``hidden`` is empty)."""
        h = self._joined(x, context)
        for layer in list(self.head)[:-1]:
            h = layer(h)
        return h

    def _joined(self, x: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        check_trailing_shape("x", x, self.data_shape)
        leading = x.shape[: x.dim() - len(self.data_shape)]
        rows = x.reshape(math.prod(leading), *self.data_shape)
        features = self.features(rows).reshape(*leading, -1)
        return join_context(features, context, self.context_dim)
