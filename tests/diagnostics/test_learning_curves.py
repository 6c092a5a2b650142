"""Learning curves: the same splits for every model, errors that fall with more rows on a
learnable problem, and named mistakes."""

from __future__ import annotations

import pytest
import torch

import pyrogen
from pyrogen.diagnostics.learning_curves import learning_curve


def _two_classes(n: int = 120) -> tuple[torch.Tensor, torch.Tensor]:
    y = torch.arange(n) % 2
    x = torch.randn(n, 3, generator=torch.Generator().manual_seed(0)) + 1.5 * y[:, None]
    return x, y


def test_every_model_sees_the_same_splits_and_errors_fall_with_more_rows():
    x, y = _two_classes()
    make = lambda: pyrogen.NaiveBayes(2)  # noqa: E731
    curves = learning_curve({"a": make, "b": make}, x, y, [2, 80], splits=6)
    assert curves["a"] == curves["b"]  # same splits, same seeds: the same numbers
    small, large = curves["a"].error
    assert large < small and large < 0.2  # Bayes error here is about 0.1
    assert all(0 <= se <= 0.5 for se in curves["a"].standard_error)


@pytest.mark.parametrize(
    "sizes, message",
    [([1], "sizes: expected sizes from 2"), ([120], "a test row per class"), ([0], "sizes")],
)
def test_sizes_outside_what_the_data_allow_are_named(sizes, message):
    x, y = _two_classes()
    with pytest.raises(ValueError, match=message):
        learning_curve({"nb": lambda: pyrogen.NaiveBayes(2)}, x, y, sizes, splits=1)


def test_a_model_that_does_not_predict_classes_is_named():
    x, y = _two_classes()
    with pytest.raises(ValueError, match="expected models that predict classes, got 'vae'"):
        learning_curve({"vae": lambda: pyrogen.VAE((3,), latent_dim=1)}, x, y, [10], splits=1)
