"""Out-of-distribution scores from a model's likelihood: higher = more out-of-distribution.

Every score asks the model only through its contract: the per-example log-likelihood (exact,
or the bound the family reports: a VAE's importance-weighted L_K, a diffusion model's ELBO,
an energy model's -E(x) - log Z) comes from ``model.score_examples`` and is divided by
``model.values_per_example``. What each number rests on is said by :func:`describe_score`.

A raw likelihood can rank out-of-distribution data *above* the training data (Nalisnick et
al. 2019: a flow trained on CIFAR-10 gives SVHN higher likelihood): the other scores correct
for that in three ways, each with its own assumption (see ``docs/ood.rst``).
"""

from __future__ import annotations

import io
import math
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pyrogen.checks import check_choice, check_int, check_number
from pyrogen.diagnostics.scoring import (
    as_float_tensor,
    check_model,
    score_labels,
    score_rows,
)
from pyrogen.infer import fit
from pyrogen.models.base import GenerativeModel

__all__ = [
    "COMPRESSORS",
    "TypicalityTest",
    "check_likelihood",
    "code_length",
    "complexity_score",
    "describe_score",
    "fit_background",
    "likelihood_ratio",
    "negative_log_likelihood",
    "perturb",
    "typicality_score",
]

#: Lossless compressors of :func:`code_length`: ``"zlib"`` (DEFLATE, stdlib) and ``"png"``
#: (Pillow, which matplotlib ships with).
COMPRESSORS = ("zlib", "png")
#: Data with at most this many distinct values are perturbed by drawing among those values
#: (binary pixels, 8-bit levels); more are treated as continuous (uniform over their range).
MAX_PERTURBATION_LEVELS = 256
# 8-bit quantization of an example before it is compressed (Serra et al. 2020).
_LEVELS = 256


def check_likelihood(model: Any) -> None:
    """Raise unless ``model`` is a pyrogen model with a likelihood of x, exact or a bound.

    Raises:
        TypeError: not a pyrogen model.
        ValueError: an implicit model (a GAN: ``has_likelihood`` False) or a discriminative
            one (logistic regression: ``generates_data`` False, it models p(y | x) only),
            naming the family.
    """
    check_model(model)
    if not model.has_likelihood:
        why = "has no likelihood (an implicit model; judge it by its samples)"
    elif not model.generates_data:
        why = f"models {model.likelihood_target} only, not a density of x"
    else:
        return
    raise ValueError(
        f"model: expected a family with a likelihood of x (exact or a bound) to score "
        f"out-of-distribution data, got {model.family}, which {why}"
    )


def negative_log_likelihood(
    model: GenerativeModel,
    x: Any,
    y: Any = None,
    *,
    num_samples: int | None = None,
    seed: int | None = 0,
) -> torch.Tensor:
    """-log p(x) / D per example, nats per value (D = ``model.values_per_example(x)``).

    Assumes the model puts less probability on out-of-distribution inputs than on typical
    ones, which fails for inputs simpler than the training data (Nalisnick et al. 2019).
    Where the family reports a bound (``model.exact_likelihood`` False) this is the
    negative of that bound: above -log p(x) / D in expectation for a lower bound.

    Args:
        model: a fitted model with a likelihood of x (see :func:`check_likelihood`).
        x: examples (N, ``*data_shape``).
        y: labels (N,) of a model conditioned on them (required there), else None.
        num_samples: what ``model.score_samples_name`` names (importance samples of the
            bound, diffusion steps); None: the family's default; unused where exact.
        seed: seeds the Monte Carlo draws of a bound (the global state is left as it was).

    Returns:
        (N,) float tensor on the CPU, nats per value.

    Example:
        >>> import torch, pyrogen
        >>> from pyrogen.ood import negative_log_likelihood
        >>> x = torch.randn(50, 2)
        >>> gmm = pyrogen.fit(pyrogen.GaussianMixture(1), x, steps=5, progress=False).model
        >>> negative_log_likelihood(gmm, torch.tensor([[0.0, 0.0], [8.0, 8.0]])).argmax().item()
        1
    """
    check_likelihood(model)
    if num_samples is not None:
        check_int("num_samples", num_samples)
    x = as_float_tensor(x, "x")
    labels = score_labels(model, y, x.shape[0])
    condition = labels.to(model.device) if model.conditions_on_labels else None
    scores = score_rows(model, x.to(model.device), condition, num_samples=num_samples, seed=seed)
    return -scores["log_likelihood"] / model.values_per_example(x)


def typicality_score(
    model: GenerativeModel,
    x: Any,
    reference: Any,
    y: Any = None,
    reference_y: Any = None,
    *,
    num_samples: int | None = None,
    seed: int | None = 0,
) -> torch.Tensor:
    """``|nll(x) - mean nll(reference)|`` per example, nats per value: the distance of each
    example's :func:`negative_log_likelihood` from its typical value on in-distribution
    ``reference`` rows (the one-example form of the typicality test, Nalisnick et al. 2019).

    Flags inputs that are too *likely* as well as too unlikely. Assumes in-distribution
    examples concentrate near the typical value, which holds for high-dimensional data (the
    typical set); with one example it is noisy where the per-example spread is wide: test
    batches with :class:`TypicalityTest`.

    Args:
        model, x, y, num_samples, seed: as :func:`negative_log_likelihood`.
        reference: held-out in-distribution examples (R, ``*data_shape``).
        reference_y: their labels, for a model conditioned on labels.

    Returns:
        (N,) float tensor, nats per value.
    """
    options = {"num_samples": num_samples, "seed": seed}
    typical = negative_log_likelihood(model, reference, reference_y, **options).mean()
    return (negative_log_likelihood(model, x, y, **options) - typical).abs()


@dataclass(frozen=True)
class TypicalityTest:
    """The typicality test for batches of M examples (Nalisnick et al. 2019): a batch is
    out-of-distribution when its mean -log p(x) / D is further than ``threshold`` from the
    typical value, the mean over the training rows.

    The threshold is the (1 - alpha) quantile of that distance over ``bootstraps`` batches
    of M rows drawn with replacement from held-out in-distribution rows, so about a share
    alpha of in-distribution batches are flagged. Assumes the test batch is drawn from one
    distribution (all in or all out), which is what a batch test is for.

    Attributes:
        batch_size: M, the rows of a tested batch.
        alpha: the share of in-distribution batches flagged (the test's size).
        typical_nll: mean nats per value over the training rows.
        threshold: the bootstrap (1 - alpha) quantile of the distance, nats per value.
        bootstrap: (bootstraps,) the distances of the bootstrap batches.
    """

    batch_size: int
    alpha: float
    typical_nll: float
    threshold: float
    bootstrap: torch.Tensor

    @classmethod
    def fit(
        cls,
        model: GenerativeModel,
        train: Any,
        validation: Any,
        *,
        batch_size: int,
        alpha: float = 0.01,
        bootstraps: int = 1000,
        train_y: Any = None,
        validation_y: Any = None,
        num_samples: int | None = None,
        seed: int | None = 0,
    ) -> TypicalityTest:
        """Score the training and held-out rows and set the threshold
        (:meth:`from_scores`); ``seed`` seeds both the bounds' draws and the bootstrap."""
        options = {"num_samples": num_samples, "seed": seed}
        train_nll = negative_log_likelihood(model, train, train_y, **options)
        validation_nll = negative_log_likelihood(model, validation, validation_y, **options)
        return cls.from_scores(
            train_nll,
            validation_nll,
            batch_size=batch_size,
            alpha=alpha,
            bootstraps=bootstraps,
            seed=0 if seed is None else seed,
        )

    @classmethod
    def from_scores(
        cls,
        train_nll: Any,
        validation_nll: Any,
        *,
        batch_size: int,
        alpha: float = 0.01,
        bootstraps: int = 1000,
        seed: int = 0,
    ) -> TypicalityTest:
        """The test from per-example nats per value of training rows (N,) and of held-out
        in-distribution rows (V,); the same seed gives the same threshold."""
        check_int("batch_size", batch_size)
        check_int("bootstraps", bootstraps)
        if check_number("alpha", alpha) >= 1:
            raise ValueError(f"alpha: expected a share in (0, 1), got {alpha!r}")
        typical = as_float_tensor(train_nll, "train_nll").double().mean()
        held_out = as_float_tensor(validation_nll, "validation_nll").double().reshape(-1)
        generator = torch.Generator().manual_seed(seed)
        rows = torch.randint(len(held_out), (bootstraps, batch_size), generator=generator)
        distances = (held_out[rows].mean(-1) - typical).abs()
        threshold = torch.quantile(distances, 1 - alpha)
        return cls(batch_size, float(alpha), float(typical), float(threshold), distances)

    def statistics_of(self, nll: Any) -> torch.Tensor:
        """``|mean nll of each batch - typical_nll|`` (B,) of per-example nats per value
        (B * M,), taken M consecutive rows at a time."""
        values = as_float_tensor(nll, "nll").double().reshape(-1)
        if len(values) == 0 or len(values) % self.batch_size:
            raise ValueError(
                f"x: expected a whole number of batches of {self.batch_size} rows, got "
                f"{len(values)} rows"
            )
        return (values.reshape(-1, self.batch_size).mean(-1) - self.typical_nll).abs()

    def statistics(
        self,
        model: GenerativeModel,
        x: Any,
        y: Any = None,
        *,
        num_samples: int | None = None,
        seed: int | None = 0,
    ) -> torch.Tensor:
        """The test statistic of each batch of M consecutive rows of x (B * M, ...): (B,),
        nats per value, higher = more out-of-distribution (a score per batch)."""
        options = {"num_samples": num_samples, "seed": seed}
        return self.statistics_of(negative_log_likelihood(model, x, y, **options))

    def flags(self, model: GenerativeModel, x: Any, y: Any = None, **options: Any) -> torch.Tensor:
        """Whether each batch of M consecutive rows of x is out-of-distribution: (B,) bool,
        the statistic above ``threshold``."""
        return self.statistics(model, x, y, **options) > self.threshold


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
    perturbed (:func:`perturb`, drawn anew each epoch), so it learns the population-level
    background statistics (the share of zeros, local smoothness) but not the semantics.

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
    levels, low, high = _support(x)

    def perturbed(rows: torch.Tensor, epoch: int, generator: torch.Generator) -> torch.Tensor:
        return perturb(rows, rate, levels=levels, low=low, high=high, generator=generator)

    perturbed(x[:1], 0, None)  # checks rate before any training
    return fit(background, x, y, seed=seed, epoch_transform=perturbed, **fit_options).model


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


def code_length(
    x: Any, compressor: str = "zlib", *, low: float = 0.0, high: float = 1.0
) -> torch.Tensor:
    """L(x), the bits per value a lossless compressor writes for each example quantized to
    8 bits (256 levels over [``low``, ``high``]): the input complexity of Serra et al. (2020).

    ``"zlib"`` compresses the raw bytes (DEFLATE, level 9); ``"png"`` writes an image
    (C, H, W) with 1 or 3 channels, or (H, W), as a PNG (a flat example as one row), whose
    filters predict each pixel from its neighbours. Both count their headers, so even a
    constant example costs some bits.

    Args:
        x: examples (N, ...) with values in [low, high].
        compressor: one of :data:`COMPRESSORS`.
        low, high: the range quantized to 0 and 255.

    Returns:
        (N,) float tensor, bits per value (D = the values of one example).
    """
    check_choice("compressor", compressor, COMPRESSORS)
    x = as_float_tensor(x, "x").detach().cpu().double()
    if not high > low:
        raise ValueError(f"high: expected a value above low = {low}, got {high!r}")
    if len(x) and (x.min() < low or x.max() > high):
        raise ValueError(
            f"x: expected values in [{low}, {high}] to quantize to 8 bits, got "
            f"[{float(x.min()):.4g}, {float(x.max()):.4g}] (set low and high)"
        )
    levels = ((x - low) / (high - low) * (_LEVELS - 1)).round().to(torch.uint8).numpy()
    compress = _png_bytes if compressor == "png" else _zlib_bytes
    values = max(1, math.prod(x.shape[1:]))
    return torch.tensor([8.0 * compress(example) / values for example in levels])


def _zlib_bytes(example: np.ndarray) -> int:
    return len(zlib.compress(example.tobytes(), 9))


def _png_bytes(example: np.ndarray) -> int:
    from PIL import Image  # Pillow comes with matplotlib; imported only when asked for

    if example.ndim == 3 and example.shape[0] in (1, 3):
        example = np.moveaxis(example, 0, -1)  # (H, W, C): grey or RGB
        example = example[..., 0] if example.shape[-1] == 1 else example
    elif example.ndim != 2:
        example = example.reshape(1, -1)
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(example)).save(buffer, format="PNG", compress_level=9)
    return buffer.tell()


def complexity_score(
    model: GenerativeModel,
    x: Any,
    y: Any = None,
    *,
    compressor: str = "zlib",
    low: float = 0.0,
    high: float = 1.0,
    num_samples: int | None = None,
    seed: int | None = 0,
) -> torch.Tensor:
    """-log2 p(x) / D - L(x) / D per example, bits per value (Serra et al. 2020): the
    model's code length of x less a generic compressor's (:func:`code_length`), so that
    inputs likely only because they are simple no longer look in-distribution.

    It is a difference of two code lengths (a log-likelihood ratio against the compressor
    as a universal model) only where p is a probability of the 8-bit data (a discrete
    model: Bernoulli or categorical pixels, a discretized likelihood). For a density of
    8-bit data scaled to [0, 1], the probability of a value's bin is about p(x) / 256 per
    value, so the proper difference is this score plus 8 bits per value: the same shift for
    every example, which changes no ranking and no metric.

    Args:
        model, x, y, num_samples, seed: as :func:`negative_log_likelihood`.
        compressor, low, high: as :func:`code_length`.

    Returns:
        (N,) float tensor, bits per value.
    """
    lengths = code_length(x, compressor, low=low, high=high)
    nll = negative_log_likelihood(model, x, y, num_samples=num_samples, seed=seed)
    return nll / math.log(2) - lengths


#: What each score of :data:`pyrogen.ood.SCORES` is and what it assumes, for reports.
_ASSUMPTIONS = {
    "nll": "-log p(x) / D, nats per value: assumes OOD inputs are less likely (fails for "
    "inputs simpler than the training data)",
    "typicality": "|nll(x) - mean nll of in-distribution rows|, nats per value: assumes "
    "in-distribution rows sit in the typical set (noisy one example at a time)",
    "complexity": "-log2 p(x) / D - L(x) / D, bits per value, L an 8-bit lossless "
    "compressor's code length: assumes the compressor measures how simple an input is",
    "likelihood_ratio": "nll(x) - nll_background(x), nats per value, the background fitted "
    "on perturbed inputs: assumes it captures the background statistics only",
}


def describe_score(model: GenerativeModel, score: str, *, num_samples: int | None = None) -> str:
    """What a score of :data:`pyrogen.ood.SCORES` is for this model: its formula and
    assumption, and what its log-likelihood is (exact, or which bound), from the model's
    own ``score_descriptions``."""
    check_choice("score", score, tuple(_ASSUMPTIONS))
    samples = model.default_score_samples if num_samples is None else num_samples
    likelihood = model.score_descriptions(samples, 1).get("log_likelihood", "")
    return f"{_ASSUMPTIONS[score]}; log p(x): {likelihood}"
