"""Checks shared by the building blocks; messages read "name: expected X, got Y"."""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral
from typing import Any

import torch


def _is_int(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def check_int(name: str, value: Any, *, minimum: int = 1) -> int:
    """``value`` as an int, or a ValueError if it is not an integer >= ``minimum``."""
    if not _is_int(value) or value < minimum:
        what = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        raise ValueError(f"{name}: expected {what}, got {value!r}")
    return int(value)


def check_ints(name: str, value: Any, *, allow_empty: bool = True) -> tuple[int, ...]:
    """``value`` as a tuple of positive ints, or a ValueError naming ``name``."""
    if (
        isinstance(value, str)
        or not isinstance(value, Sequence)
        or not all(_is_int(v) and v > 0 for v in value)
        or (not value and not allow_empty)
    ):
        what = "a sequence" if allow_empty else "a non-empty sequence"
        raise ValueError(f"{name}: expected {what} of positive ints, got {value!r}")
    return tuple(int(v) for v in value)


def check_trailing_shape(name: str, tensor: torch.Tensor, expected: tuple[int, ...]) -> None:
    """A ValueError unless ``tensor`` has shape ``(..., *expected)``."""
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(tensor).__name__}")
    if tensor.ndim < len(expected) or tuple(tensor.shape[-len(expected) :]) != expected:
        raise ValueError(
            f"{name}: expected trailing shape {expected}, got shape {tuple(tensor.shape)}"
        )


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
