"""Out-of-distribution scores from a model's likelihood (higher = more out-of-distribution):
the negative log-likelihood per value and the typicality test.

Every score asks the model only through its contract: the per-example log-likelihood (exact,
or the bound the family reports: a VAE's importance-weighted L_K, a diffusion model's ELBO,
an energy model's -E(x) - log Z) comes from ``model.score_examples`` and is divided by
``model.values_per_example``. What each number rests on is said by :func:`describe_score`.

A raw likelihood can rank out-of-distribution data *above* the training data (Nalisnick et
al. 2019: a flow trained on CIFAR-10 gives SVHN higher likelihood): the other scores correct
for that: typicality here, the likelihood ratio in :mod:`pyrogen.ood.background` and the
complexity correction in :mod:`pyrogen.ood.complexity`, each with its own assumption.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from pyrogen.checks import check_choice, check_int, check_number
from pyrogen.diagnostics.scoring import (
    as_float_tensor,
    check_model,
    score_labels,
    score_rows,
)
from pyrogen.models.base import GenerativeModel

__all__ = [
    "TypicalityTest",
    "check_likelihood",
    "describe_score",
    "negative_log_likelihood",
    "typicality_score",
]


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
