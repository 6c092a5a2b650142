"""Bayes' rule over any pyrogen density: a generative classifier from class-conditional
densities.

    p(y = k | x) = p(y = k) p(x | y = k) / sum_j p(y = j) p(x | y = j)

The class-conditional densities are either one fitted model per class (a Gaussian mixture
per class is mixture discriminant analysis; a flow or an autoregressive model per class
works the same way) or one model conditioned on the label (a flow, VAE or autoregressive
model built with ``num_classes``). Where a density's likelihood is a bound (a VAE's
importance-weighted L_K), the posterior uses that bound in place of log p(x | y).

The marginal log p(x) = log sum_k p(y = k) p(x | y = k) scores how typical an input is:
:meth:`BayesClassifier.predict` with ``min_log_prob`` rejects (-1) the rows the classes
all find unlikely, however confident p(y | x) is among them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from pyrogen.checks import as_labels, as_tensor, check_int
from pyrogen.models.base import GenerativeModel

#: The label :meth:`BayesClassifier.predict` gives a rejected row.
REJECTED = -1


class BayesClassifier(nn.Module):
    """p(y | x) proportional to p(y) p(x | y), from fitted pyrogen densities.

    Not a family of the registry: it is trained by fitting its densities (each with
    :func:`pyrogen.fit` on its class's rows), and saved by saving them.

    Args:
        densities: one fitted model per class, in class order (each scores x (N, ...) by
            ``log_likelihood``), or one fitted model conditioned on labels
            (``conditions_on_labels``, with ``label_count`` classes).
        prior: p(y), C class probabilities (e.g. the training frequencies); None: uniform.
        num_samples: importance samples of a density whose likelihood is a bound (ignored
            where it is exact).

    Shapes:
        x (N, ``*data_shape``); predict_proba (N, C); log_prob and predict (N,).

    Example:
        >>> import torch, pyrogen
        >>> x = torch.cat([torch.randn(50, 2) - 2, torch.randn(50, 2) + 2])
        >>> densities = [pyrogen.GaussianMixture(1), pyrogen.GaussianMixture(2)]
        >>> for k, density in enumerate(densities):
        ...     _ = pyrogen.fit(density, x[50 * k : 50 * (k + 1)], progress=False)
        >>> classifier = pyrogen.BayesClassifier(densities)
        >>> classifier.predict(torch.tensor([[-2.0, -2.0], [2.0, 2.0]])).tolist()
        [0, 1]
    """

    def __init__(
        self,
        densities: Sequence[GenerativeModel] | GenerativeModel,
        prior: Sequence[float] | torch.Tensor | None = None,
        *,
        num_samples: int | None = None,
    ) -> None:
        super().__init__()
        if isinstance(densities, GenerativeModel):
            if not densities.conditions_on_labels or not densities.label_count:
                raise ValueError(
                    "densities: expected one model per class, or one model conditioned on "
                    f"labels, got a single {densities.family} model that is not conditioned "
                    "on labels"
                )
            self.conditional: GenerativeModel | None = densities
            self.densities = nn.ModuleList()
            classes = densities.label_count
        else:
            densities = list(densities)
            if len(densities) < 2 or not all(isinstance(d, GenerativeModel) for d in densities):
                raise ValueError(
                    "densities: expected at least two pyrogen models (one per class), got "
                    f"{[type(d).__name__ for d in densities]}"
                )
            self.conditional = None
            self.densities = nn.ModuleList(densities)
            classes = len(densities)
        self.num_classes = classes
        self.num_samples = None if num_samples is None else check_int("num_samples", num_samples)
        weights = torch.full((classes,), 1.0 / classes) if prior is None else _prior(prior, classes)
        self.register_buffer("prior", weights)  # log taken in the dtype it is used in

    @property
    def log_prior(self) -> torch.Tensor:
        """log p(y), shape (C,)."""
        return self.prior.log()

    def class_log_likelihoods(self, x: Any) -> torch.Tensor:
        """log p(x | y = k) of every row under every class's density (exact, or the
        density's bound), shape (N, C), in nats."""
        x = as_tensor(x, name="x", ndim=None, dtype=self.log_prior.dtype)
        options = {} if self.num_samples is None else {"num_samples": self.num_samples}
        columns = []
        with torch.no_grad():
            for k in range(self.num_classes):
                if self.conditional is not None:
                    labels = torch.full((x.shape[0],), k, dtype=torch.long)
                    density = self.conditional
                    score = density.log_likelihood(x, labels.to(density.device), **options)
                else:
                    density = self.densities[k]
                    score = density.log_likelihood(x.to(density.device), **options)
                columns.append(score.to(self.log_prior))
        return torch.stack(columns, -1)

    def joint_log_density(self, x: Any) -> torch.Tensor:
        """log p(x, y = k) = log p(y = k) + log p(x | y = k), shape (N, C)."""
        return self.class_log_likelihoods(x) + self.log_prior

    def log_prob(self, x: Any) -> torch.Tensor:
        """log p(x) = log sum_k p(y = k) p(x | y = k) per row, shape (N,), in nats: exact
        where every density is (a bound where one is a bound)."""
        return self.joint_log_density(x).logsumexp(-1)

    def predict_proba(self, x: Any) -> torch.Tensor:
        """p(y = k | x) by Bayes' rule, shape (N, C)."""
        return torch.softmax(self.joint_log_density(x), -1)

    def predict(self, x: Any, min_log_prob: float | None = None) -> torch.Tensor:
        """The most probable class of each row, shape (N,) (int64); with ``min_log_prob``,
        :data:`REJECTED` (-1) for rows whose log p(x) is below it (the reject option)."""
        joint = self.joint_log_density(x)
        classes = joint.argmax(-1)
        if min_log_prob is None:
            return classes
        return torch.where(joint.logsumexp(-1) < min_log_prob, REJECTED, classes)

    @torch.no_grad()
    def sample(
        self, n: int, y: Any = None, *, return_labels: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Draw (x, y): y from the prior (or the given classes (n,)), x from its class's
        density.

        Returns:
            x (n, ``*data_shape``); with ``return_labels``, ``(x, y)``.
        """
        check_int("n", n, 1)
        if y is None:
            y = torch.distributions.Categorical(logits=self.log_prior).sample((n,))
        y = as_labels(y, n, self.num_classes).to(self.log_prior.device)
        if self.conditional is not None:
            x = self.conditional.sample(n, y.to(self.conditional.device))
        else:
            parts = {k: self.densities[k].sample(int((y == k).sum())) for k in y.unique().tolist()}
            x = torch.empty(n, *next(iter(parts.values())).shape[1:])
            for k, part in parts.items():
                x[y == k] = part.to(x)
        return (x, y) if return_labels else x


def _prior(prior: Sequence[float] | torch.Tensor, classes: int) -> torch.Tensor:
    weights = torch.as_tensor(prior, dtype=torch.get_default_dtype())
    if weights.shape != (classes,) or bool((weights <= 0).any()):
        raise ValueError(
            f"prior: expected {classes} positive class probabilities, got {weights.tolist()}"
        )
    return weights / weights.sum()
