"""Joining a condition (a one-hot label, given values) to a network's input."""

from __future__ import annotations

import torch

from pyrogen.checks import check_trailing_shape


def one_hot(labels: torch.Tensor, num_classes: int, dtype: torch.dtype) -> torch.Tensor:
    """Labels (...,) in 0..num_classes-1 as one-hot vectors (..., num_classes) of ``dtype``.

    Unlike ``torch.nn.functional.one_hot`` it reads no value back from the tensor (labels
    are checked where they enter), so a training step that uses it stays one fixed graph of
    tensor operations (see :mod:`pyrogen.infer.compiled`).

    Example:
        >>> one_hot(torch.tensor([2, 0]), 3, torch.float32)
        tensor([[0., 0., 1.],
                [1., 0., 0.]])
    """
    classes = torch.arange(num_classes, device=labels.device)
    return (labels.long().unsqueeze(-1) == classes).to(dtype)


def join_context(
    features: torch.Tensor, context: torch.Tensor | None, context_dim: int
) -> torch.Tensor:
    """Append ``context`` (..., context_dim) to ``features`` (..., F), broadcasting the leading
    dims (so one label per row serves every importance sample or enumerated value)."""
    if context_dim == 0:
        if context is not None:
            raise ValueError(
                "context: expected None (the module was built with context_dim=0), "
                f"got a tensor of shape {tuple(context.shape)}"
            )
        return features
    if context is None:
        raise ValueError(f"context: expected a tensor of shape (..., {context_dim}), got None")
    check_trailing_shape("context", context, (context_dim,))
    try:
        leading = torch.broadcast_shapes(features.shape[:-1], context.shape[:-1])
    except RuntimeError:
        raise ValueError(
            f"context: expected leading dims broadcastable to {tuple(features.shape[:-1])}, "
            f"got shape {tuple(context.shape)}"
        ) from None
    # A one-hot label often arrives as an integer tensor; the network computes in the input's dtype.
    context = context.to(features.dtype)
    return torch.cat([features.expand(*leading, -1), context.expand(*leading, -1)], dim=-1)
