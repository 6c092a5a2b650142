"""The likelihood ratio of Ren et al. (2019): a model's likelihood against that of a
background model of the same kind fitted on perturbed inputs, which explains the
population-level statistics (the many zero pixels that make simple images likely) but not
the semantic content."""

from __future__ import annotations

from typing import Any

import torch

from pyrogen.checks import check_number
from pyrogen.diagnostics.scoring import as_float_tensor
from pyrogen.infer import fit
from pyrogen.models.base import GenerativeModel
from pyrogen.ood.scores import check_likelihood, negative_log_likelihood

__all__ = ["MAX_PERTURBATION_LEVELS", "fit_background", "likelihood_ratio", "perturb"]

#: Data with at most this many distinct values are perturbed by drawing among those values
#: (binary pixels, 8-bit levels); more are treated as continuous (uniform over their range).
MAX_PERTURBATION_LEVELS = 256


def perturb(
    x: Any,
    rate: float,
    *,
    levels: Any = None,
    low: float | None = None,
    high: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """A copy of x with each value replaced, with probability ``rate``, by a uniform draw:
    the inputs a background model is trained on (Ren et al. 2019).

    Draws are among ``levels`` where given, else uniform on [``low``, ``high``] where
    given; with neither, among the distinct values of x where it has at most
    :data:`MAX_PERTURBATION_LEVELS` (binary data: a chosen bit is resampled, so flipped with
    probability 1/2; 8-bit images: a uniform level) and uniform over x's range otherwise.

    Args:
        x: examples (N, ...).
        rate: the share of values replaced, in [0, 1].
        levels: (L,) the values a discrete datum takes.
        low, high: the range of a continuous datum.
        generator: the source of randomness (on x's device); None: torch's global one.

    Returns:
        a tensor like x.
    """
    x = as_float_tensor(x, "x")
    if check_number("rate", rate, allow_zero=True) > 1:
        raise ValueError(f"rate: expected a share in [0, 1], got {rate!r}")
    if levels is None and (low is None or high is None):
        levels, low, high = _support(x)
    options = {"generator": generator, "device": x.device}
    replaced = torch.rand(x.shape, **options) < rate
    if levels is not None:
        levels = torch.as_tensor(levels, dtype=x.dtype, device=x.device).reshape(-1)
        draws = levels[torch.randint(len(levels), x.shape, **options)]
    else:
        draws = low + (high - low) * torch.rand(x.shape, dtype=x.dtype, **options)
    return torch.where(replaced, draws, x)


def _support(x: torch.Tensor) -> tuple[torch.Tensor | None, float, float]:
    """(levels, low, high) of x: its distinct values where few, else None and its range."""
    distinct = torch.unique(x)
    if len(distinct) <= MAX_PERTURBATION_LEVELS:
        return distinct, float(distinct[0]), float(distinct[-1])
    return None, float(x.min()), float(x.max())


def fit_background(
    model: GenerativeModel,
    x: Any,
    y: Any = None,
    *,
    rate: float = 0.2,
    background: GenerativeModel | None = None,
    seed: int = 0,
    **fit_options: Any,
) -> GenerativeModel:
    """The background model of the likelihood ratio (Ren et al. 2019): a fresh model of
    ``model``'s family and config (``type(model)(**model.config)``) fitted by
    :func:`pyrogen.fit` on the training rows x with a share ``rate`` of their values
    perturbed (:func:`perturb`, one copy drawn from ``seed``), so it learns the
    population-level background statistics (the share of zeros, local smoothness) but not
    the semantics. One perturbed copy rather than a new one each epoch, so that a family's
    data-dependent start (a mixture's EM in ``setup``) sees the perturbed rows too.

    Args:
        model: the fitted model whose family and config the background takes.
        x: the training rows (N, ``*data_shape``); y: their labels where the model uses them.
        rate: the share of values perturbed (Ren et al. chose it in [0.1, 0.3] on held-out
            data; they also add weight decay, e.g. through ``optim`` options).
        background: an unfitted model to fit in place of the rebuilt one (a family built
            around a custom network, whose config cannot rebuild it).
        seed: of the fit and of the perturbations.
        **fit_options: passed to :func:`pyrogen.fit` (``steps``, ``batch_size``, ...).

    Returns:
        the fitted background model.
    """
    check_likelihood(model)
    if background is None:
        try:
            background = type(model)(**model.config)
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"model: a {model.family} could not be rebuilt from its config ({error}); "
                "pass background=, an unfitted model of the same kind"
            ) from None
    x = as_float_tensor(x, "x")
    generator = torch.Generator(x.device).manual_seed(seed)
    return fit(background, perturb(x, rate, generator=generator), y, seed=seed, **fit_options).model


def likelihood_ratio(
    model: GenerativeModel,
    background: GenerativeModel,
    x: Any,
    y: Any = None,
    *,
    num_samples: int | None = None,
    seed: int | None = 0,
) -> torch.Tensor:
    """-(log p_model(x) - log p_background(x)) / D per example, nats per value (Ren et al.
    2019): the likelihood left once what a model of perturbed inputs also explains (the
    background, e.g. the many zero pixels that make simple images likely) is divided out.

    Assumes the background model captures the population-level statistics that dominate the
    likelihood and the model captures those and the semantic content; the rate of
    perturbation trades the two off (see :func:`fit_background`). Where the families report
    bounds the ratio is of bounds, with the error of both.

    Returns:
        (N,) float tensor, nats per value.
    """
    check_likelihood(background)
    options = {"num_samples": num_samples, "seed": seed}
    return negative_log_likelihood(model, x, y, **options) - negative_log_likelihood(
        background, x, y, **options
    )
