"""Test error against training-set size: the learning curves of Ng & Jordan's comparison
of generative and discriminative classifiers, for any family that predicts classes."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import torch

from pyrogen.checks import as_tensor, check_int, label_tensor
from pyrogen.infer.engine import fit
from pyrogen.models.base import GenerativeModel

__all__ = ["LearningCurve", "learning_curve"]


class LearningCurve(NamedTuple):
    """One model's curve: ``sizes`` (S,) training rows, the mean test ``error`` (S,) over the
    splits and its ``standard_error`` (S,) (std / sqrt(splits))."""

    sizes: list[int]
    error: list[float]
    standard_error: list[float]


def learning_curve(
    models: Mapping[str, Callable[[], GenerativeModel]],
    x: Any,
    y: Any,
    sizes: Sequence[int],
    *,
    splits: int = 20,
    seed: int = 0,
    **fit_options: Any,
) -> dict[str, LearningCurve]:
    """Test error of each model against the training-set size, over random splits.

    For every size and split, a training set with the same number of rows of each class
    (``size // C`` per class, C the classes in ``y``) is drawn; every other row is the test
    set; each model is built afresh (``models[name]()``), fitted by :func:`pyrogen.fit` on
    the training rows and scored by the share of test rows whose ``predict`` misses the
    label. All models see the same splits.

    Args:
        models: name -> a function returning a new, unfitted model that predicts classes.
        x: rows (N, ...); y: their integer labels (N,).
        sizes: training-set sizes, each at least C and small enough to leave every class
            a test row.
        splits: random training sets per size.
        seed: seeds the splits and the fits.
        **fit_options: passed to :func:`pyrogen.fit` (``progress`` defaults to False).

    Returns:
        name -> :class:`LearningCurve`.

    Example:
        >>> import pyrogen
        >>> g = torch.Generator().manual_seed(0)
        >>> y = torch.arange(60) % 2
        >>> x = torch.randn(60, 2, generator=g) + 2 * y[:, None]
        >>> curves = learning_curve({"naive Bayes": lambda: pyrogen.NaiveBayes(2)}, x, y,
        ...                         [4, 20], splits=3)
        >>> curves["naive Bayes"].sizes, len(curves["naive Bayes"].error)
        ([4, 20], 2)
    """
    x = as_tensor(x, name="x", ndim=None)
    y = label_tensor(y, "y")
    if y.dim() != 1 or len(y) != len(x):
        raise ValueError(f"y: expected {len(x)} labels (N,), got shape {tuple(y.shape)}")
    classes = torch.unique(y)
    counts = torch.stack([(y == k).sum() for k in classes])
    sizes = [check_int("sizes", size) for size in sizes]
    for size in sizes:
        if size < len(classes) or size // len(classes) >= int(counts.min()):
            raise ValueError(
                f"sizes: expected sizes from {len(classes)} (a row per class) to below "
                f"{len(classes) * int(counts.min())} (a test row per class), got {size}"
            )
    generator = torch.Generator().manual_seed(seed)
    errors: dict[str, list[list[float]]] = {name: [] for name in models}
    for size in sizes:
        for name in models:
            errors[name].append([])
        for _ in range(check_int("splits", splits)):
            order = torch.randperm(len(y), generator=generator)
            train = torch.cat([order[y[order] == k][: size // len(classes)] for k in classes])
            test = order[~torch.isin(order, train)]
            for name, make in models.items():
                model = make()
                if model.predicts != "class":
                    raise ValueError(
                        f"models: expected models that predict classes, got {name!r} "
                        f"({type(model).__name__})"
                    )
                fit(model, x[train], y[train], **{"progress": False, "seed": seed, **fit_options})
                missed = (model.predict(x[test]).cpu() != y[test]).double().mean()
                errors[name][-1].append(float(missed))
    return {name: _summary(sizes, per_size) for name, per_size in errors.items()}


def _summary(sizes: list[int], per_size: list[list[float]]) -> LearningCurve:
    means, standard_errors = [], []
    for values in per_size:
        mean = sum(values) / len(values)
        spread = sum((v - mean) ** 2 for v in values) / max(1, len(values) - 1)
        means.append(mean)
        standard_errors.append(math.sqrt(spread / len(values)))
    return LearningCurve(sizes, means, standard_errors)
