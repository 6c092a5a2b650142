"""Argument checks shared by every layer; each error names the argument and what was expected.

Messages read ``"name: expected X, got Y"``. This is the bottom layer (it imports only torch
and numpy), so models, networks, the engine and the command line all check arguments the
same way and say the same thing.

Example:
    >>> check_int("steps", 10)
    10
    >>> check_choice("covariance", "full", ("full", "diag"))
    'full'
    >>> as_labels([0, 2, 1], rows=3, num_classes=3)
    tensor([0, 2, 1])
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from numbers import Integral, Real
from typing import Any

import numpy as np
import torch

__all__ = [
    "label_tensor",
    "physical_memory",
    "as_examples",
    "as_labels",
    "as_tensor",
    "check_choice",
    "check_int",
    "check_ints",
    "check_number",
    "check_trailing_shape",
    "float_dtype_of",
]


def _is_int(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def check_int(name: str, value: Any, minimum: int = 1) -> int:
    """``value`` as an int if it is an integer (not a bool; numpy integers count) of at least
    ``minimum``.

    Raises:
        ValueError: naming ``name``: "expected a positive integer, got 0" and the like.
    """
    if not _is_int(value) or value < minimum:
        expected = {1: "a positive integer", 0: "a non-negative integer"}.get(
            minimum, f"an integer >= {minimum}"
        )
        raise ValueError(f"{name}: expected {expected}, got {value!r}")
    return int(value)


def check_number(name: str, value: Any, *, allow_zero: bool = False) -> float:
    """``value`` as a float if it is a finite real number (not a bool or a string) above 0,
    or at least 0 with ``allow_zero``.

    Raises:
        ValueError: naming ``name``: "expected a positive number, got -1" and the like.
    """
    number = float(value) if isinstance(value, Real) and not isinstance(value, bool) else None
    if (
        number is None
        or not math.isfinite(number)
        or number < 0
        or (number == 0 and not allow_zero)
    ):
        expected = "a non-negative number" if allow_zero else "a positive number"
        raise ValueError(f"{name}: expected {expected}, got {value!r}")
    return number


def check_ints(name: str, value: Any, *, allow_empty: bool = True) -> tuple[int, ...]:
    """``value`` as a tuple of positive ints, or a ValueError naming ``name``."""
    if (
        isinstance(value, str)
        or not isinstance(value, Sequence)
        or not all(_is_int(v) and v > 0 for v in value)
        or (not value and not allow_empty)
    ):
        what = "a sequence" if allow_empty else "a non-empty sequence"
        raise ValueError(f"{name}: expected {what} of positive integers, got {value!r}")
    return tuple(int(v) for v in value)


def check_trailing_shape(name: str, tensor: torch.Tensor, expected: tuple[int, ...]) -> None:
    """A ValueError unless ``tensor`` has shape ``(..., *expected)``."""
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(tensor).__name__}")
    if tensor.ndim < len(expected) or tuple(tensor.shape[-len(expected) :]) != expected:
        raise ValueError(
            f"{name}: expected trailing shape {expected}, got shape {tuple(tensor.shape)}"
        )


# The numpy dtypes torch.from_numpy takes as they are (native byte order only).
_FROM_NUMPY_DTYPES = frozenset(
    np.dtype(code) for code in ("?", "u1", "i1", "i2", "i4", "i8", "f2", "f4", "f8")
)


def as_tensor(
    data: torch.Tensor | np.ndarray | Sequence[Any],
    *,
    name: str = "data",
    ndim: int | None = 2,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Validate array-like ``data`` and convert it to a tensor of ``dtype``.

    Args:
        data: A torch tensor, a numpy array, or a (nested) list/tuple of numbers; for
            ``ndim=2`` of shape (n_samples, n_features).
        name: What to call ``data`` in error messages (an argument name or a file path).
        ndim: Required number of dimensions, or None to accept any.
        dtype: dtype of the result.

    Returns:
        Tensor of the same shape as ``data`` and dtype ``dtype``; a tensor input keeps its
        device. The result may share memory with ``data`` when no conversion is needed.

    Raises:
        TypeError: If ``data`` is not a tensor, numpy array, list or tuple.
        ValueError: If ``data`` is ragged or non-numeric (object, string, complex), has the wrong
            number of dimensions, is empty, holds NaN/inf (the message gives the first offending
            row and column), or has values out of range for ``dtype``.
    """
    if ndim is not None and ndim < 0:
        raise ValueError(f"ndim: expected None or a non-negative int, got {ndim}")
    tensor = _to_torch(data, name)
    _check_ndim(tensor, name, ndim)
    if tensor.numel() == 0:
        what = "at least one row" if tensor.ndim >= 1 and tensor.shape[0] == 0 else "non-empty data"
        raise ValueError(f"{name}: expected {what}, got shape {tuple(tensor.shape)}")
    _check_finite(tensor, name)
    _check_range(tensor, name, dtype)
    return tensor.to(dtype=dtype)


def _to_torch(data: object, name: str) -> torch.Tensor:
    if isinstance(data, torch.Tensor):
        if data.is_complex():
            raise ValueError(f"{name}: expected a real numeric tensor, got dtype {data.dtype}")
        return data
    if isinstance(data, list | tuple):
        try:
            data = np.asarray(data)
        except ValueError as exc:
            raise ValueError(
                f"{name}: expected a rectangular nested list of numbers, got ragged lists ({exc})"
            ) from exc
    if not isinstance(data, np.ndarray):
        raise TypeError(
            f"{name}: expected a torch.Tensor, numpy.ndarray or nested list, "
            f"got {type(data).__name__}"
        )
    return _numpy_to_torch(data, name)


def _numpy_to_torch(array: np.ndarray, name: str) -> torch.Tensor:
    kind = array.dtype.kind
    if kind not in "biuf":
        raise ValueError(
            f"{name}: expected a numeric (bool, integer or float) array, got dtype {array.dtype}"
        )
    native = array.dtype.newbyteorder("=")
    if native not in _FROM_NUMPY_DTYPES:
        # Wider unsigned ints and long doubles have no torch twin: widen to a type torch has.
        wide = kind == "f" or (kind == "u" and array.dtype.itemsize == 8)
        native = np.dtype(np.float64 if wide else np.int64)
    array = np.ascontiguousarray(array, dtype=native)
    if not array.flags.writeable:
        # torch warns on read-only buffers (e.g. np.frombuffer over bytes).
        array = array.copy()
    return torch.from_numpy(array)


def _check_ndim(tensor: torch.Tensor, name: str, ndim: int | None) -> None:
    if ndim is None or tensor.ndim == ndim:
        return
    shape = tuple(tensor.shape)
    if ndim == 2:
        message = (
            f"{name}: expected a 2-D array of shape (n_samples, n_features), got shape {shape}"
        )
        if tensor.ndim == 1:
            message += f"; for a single feature pass {name}.reshape(-1, 1)"
    else:
        message = f"{name}: expected a {ndim}-D array, got shape {shape}"
    raise ValueError(message)


def _check_finite(tensor: torch.Tensor, name: str) -> None:
    if not tensor.is_floating_point():
        return
    # min/max propagate NaN and expose +-inf: one cheap pass; the exact scan runs on failure.
    low, high = torch.aminmax(tensor)
    if bool(torch.isfinite(low) & torch.isfinite(high)):
        return
    bad = ~torch.isfinite(tensor)
    if bool(bad.any()):
        index = _first_true(bad)
        raise ValueError(
            f"{name}: expected finite values, got {tensor[index].item()} at {_describe(index)}"
        )


def _check_range(tensor: torch.Tensor, name: str, dtype: torch.dtype) -> None:
    if torch.bool in (tensor.dtype, dtype):
        return
    target = _limits(dtype)
    source = _limits(tensor.dtype)
    # Only a narrowing conversion can overflow; skipping the scan keeps large inputs cheap.
    if source.max <= target.max and source.min >= target.min:
        return
    bad = (tensor > target.max) | (tensor < target.min)
    if bool(bad.any()):
        index = _first_true(bad)
        raise ValueError(
            f"{name}: expected values within the range of {dtype}, got {tensor[index].item()!r} "
            f"at {_describe(index)}"
        )


def _limits(dtype: torch.dtype) -> torch.finfo | torch.iinfo:
    return torch.finfo(dtype) if dtype.is_floating_point else torch.iinfo(dtype)


def _first_true(mask: torch.Tensor) -> tuple[int, ...]:
    # argmax returns the first maximal entry, i.e. the first True in C order.
    flat = int(torch.argmax(mask.reshape(-1).to(torch.uint8)))
    return tuple(int(i) for i in np.unravel_index(flat, tuple(mask.shape)))


def _describe(index: tuple[int, ...]) -> str:
    if not index:
        return "the single (0-D) value"
    if len(index) == 2:
        return f"row {index[0]}, column {index[1]}"
    if len(index) == 1:
        return f"index {index[0]}"
    return f"index {index}"


def as_examples(
    data: Any,
    data_shape: Sequence[int],
    *,
    dtype: torch.dtype,
    name: str = "x",
    unit_interval: str | None = None,
    hint: str = "",
) -> torch.Tensor:
    """Examples of shape (N, ``*data_shape``) as a checked tensor (see :func:`as_tensor`).

    Args:
        data: the examples (array-like or tensor).
        data_shape: the shape of one example.
        dtype: the floating dtype to convert to.
        name: argument name used in error messages.
        unit_interval: when given, values must lie in [0, 1]; the text says why, e.g.
            ``"for a bernoulli likelihood"``.
        hint: appended to that error, e.g. what to do instead.

    Raises:
        ValueError: naming ``name``, for a wrong shape or values outside [0, 1].
    """
    x = as_tensor(data, name=name, ndim=None, dtype=dtype)
    if tuple(x.shape[1:]) != tuple(data_shape):
        raise ValueError(
            f"{name}: expected shape (n, {', '.join(map(str, data_shape))}), got {tuple(x.shape)}"
        )
    if unit_interval is not None:
        low, high = torch.aminmax(x)
        if low < 0 or high > 1:
            raise ValueError(
                f"{name}: expected values in [0, 1] {unit_interval}, got values in "
                f"[{low.item():g}, {high.item():g}]{hint}"
            )
    return x


def check_choice(name: str, value: Any, choices: Sequence[str]) -> Any:
    """Return ``value`` if it is one of ``choices``.

    Raises:
        ValueError: naming ``name``: "expected one of 'a', 'b', got 'c'".
    """
    if value not in choices:
        raise ValueError(f"{name}: expected one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def label_tensor(y: Any, name: str = "y") -> torch.Tensor:
    """Labels (array-like or tensor) as a tensor, refusing text and other non-numbers with a
    ValueError naming ``name`` (torch would raise a TypeError about numpy dtypes).

    Example:
        >>> label_tensor(["a", "b"])
        Traceback (most recent call last):
        ...
        ValueError: y: expected integer class labels, got values of type <U1 (e.g. 'a')
    """
    if isinstance(y, torch.Tensor):
        return y
    values = np.asarray(y)
    if values.dtype.kind not in "biuf":
        example = values.reshape(-1)[0] if values.size else None
        example = example.item() if isinstance(example, np.generic) else example
        raise ValueError(
            f"{name}: expected integer class labels, got values of type {values.dtype} "
            f"(e.g. {example!r})"
        )
    return torch.as_tensor(values)


def as_labels(
    y: Any, rows: int, num_classes: int, *, name: str = "y", unlabelled: bool = False
) -> torch.Tensor:
    """Class labels as an int64 tensor of shape (rows,), checked.

    Args:
        y: integer labels (array-like or tensor) of shape (rows,).
        rows: the number of examples the labels belong to.
        num_classes: C; labels must lie in 0..C-1.
        name: argument name used in error messages.
        unlabelled: also accept -1, meaning "no label" (semi-supervised data).

    Raises:
        ValueError: naming ``name``, for a wrong shape, non-integer values or a label out of
            range (the first offending row is named).
    """
    labels = label_tensor(y, name)
    if labels.dim() != 1 or labels.shape[0] != rows:
        raise ValueError(f"{name}: expected labels of shape ({rows},), got {tuple(labels.shape)}")
    if labels.is_floating_point():
        if not (torch.isfinite(labels).all() and torch.equal(labels, labels.round())):
            raise ValueError(f"{name}: expected integer class labels, got non-integer values")
    elif labels.dtype == torch.bool or labels.is_complex():
        raise ValueError(f"{name}: expected integer class labels, got dtype {labels.dtype}")
    labels = labels.long()
    low = -1 if unlabelled else 0
    bad = (labels < low) | (labels >= num_classes)
    if bad.any():
        row = int(bad.nonzero()[0, 0])
        allowed = f"0..{num_classes - 1}" + (" or -1 (unlabelled)" if unlabelled else "")
        raise ValueError(
            f"{name}: expected labels in {allowed}, got {int(labels[row])} at row {row}"
        )
    return labels


def float_dtype_of(data: Any) -> torch.dtype:
    """The dtype pyrogen computes in for ``data``.

    A floating torch tensor keeps its dtype (so float64 work stays float64); numpy arrays,
    lists and integer tensors get torch's default dtype (float32 unless changed).
    """
    if isinstance(data, torch.Tensor) and data.is_floating_point():
        return data.dtype
    return torch.get_default_dtype()


def physical_memory() -> int | None:
    """Bytes of this machine's physical memory where the system says (POSIX), else None:
    what size checks compare an allocation against before making it."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        return None


def check_data_shape(data_shape: Sequence[int] | int) -> tuple[int, ...]:
    """``data_shape`` as a tuple of positive ints (an int D means (D,)), or a ValueError
    naming it."""
    if isinstance(data_shape, int) and not isinstance(data_shape, bool):
        data_shape = (data_shape,)
    try:
        data_shape = tuple(data_shape)
    except TypeError:
        raise ValueError(
            f"data_shape: expected a shape such as (784,), got {data_shape!r}"
        ) from None
    if not data_shape or any(
        isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in data_shape
    ):
        raise ValueError(f"data_shape: expected positive integers, got {data_shape!r}")
    return data_shape
