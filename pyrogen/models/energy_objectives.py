"""Training objectives of energy-based models, for any Pyro model whose rows carry a
``pyro.factor`` site of log f(x) = -E(x) in the data plate (:class:`pyrogen.EnergyDensity`'s
``model``).

None of them is an ELBO, because the likelihood's normalizer Z is unknown; each reads the
factor by running the model under ``poutine.trace`` (the guide is empty and not run), and
each says what it estimates:

* :class:`DenoisingScoreMatching` (Vincent 2011): the Fisher divergence between the model
  and the data blurred by Gaussian noise, up to a constant; no samples from the model.
* :class:`PersistentContrastiveDivergence` (Tieleman 2008; Du & Mordatch 2019): a
  surrogate whose gradient is the negative log-likelihood's, E_data[grad E] -
  E_model[grad E], with model samples from Langevin chains kept between steps.
* :class:`NoiseContrastiveEstimation` (Gutmann & Hyvarinen 2010): the negative
  log-likelihood of observed labels data = 1 / noise = 0 under a logistic classifier whose
  logit is log f(x) - log(nu q(x)), with log Z a parameter of f; its minimizer is the
  maximum-likelihood density and the true log Z as the data grow.
* :class:`QuadratureMaximumLikelihood` (D <= 3): the negative log-likelihood itself,
  -sum log f(x) + N log Z, with log Z by (randomized) quadrature on a grid.

Like Pyro's ELBOs they return the loss for all ``num_data`` rows a minibatch stands for.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer import ELBO

from pyrogen.models.objectives import _FromDifferentiableLoss

#: The factor site of log f(x) = -E(x).
ENERGY = "energy"


def row_log_factors(
    model: Callable, x: torch.Tensor, y: torch.Tensor | None, num_data: int | None, site: str
) -> tuple[torch.Tensor, float]:
    """log f(x) of each row (N,) as the model's factor site ``site`` has it, and the scale
    of its data plate (num_data / N)."""
    trace = poutine.trace(model).get_trace(x, y, num_data=num_data)
    node = trace.nodes[site]
    return node["fn"].log_prob(node["value"]), node["scale"]


def _batch(args: tuple, kwargs: dict) -> tuple[torch.Tensor, torch.Tensor | None, int | None]:
    x = args[0]
    y = args[1] if len(args) > 1 else kwargs.get("y")
    return x, y, kwargs.get("num_data")


def _doubled(num_data: int | None) -> int | None:
    """The rows the antithetic pairs of ``num_data`` rows stand for (each counted twice)."""
    return None if num_data is None else 2 * num_data


class _EnergyObjective(_FromDifferentiableLoss, ELBO):
    """An objective computed from the model's factor site alone, not from trace pairs."""

    def _get_trace(self, model, guide, args, kwargs):
        raise NotImplementedError(f"{type(self).__name__} reads the factor site, not traces")


class DenoisingScoreMatching(_EnergyObjective):
    """Denoising score matching at one or several noise levels.

    Each row x gets one level sigma drawn uniformly from ``noise_levels`` and a noisy copy
    x~ = x + sigma s * eps, eps ~ N(0, I), s the per-value ``scale`` (so sigma is in
    standardized units). The loss per row is (1/2) || sigma s * grad log f(x~) + eps ||^2:
    sigma^2 times the regression of the model's score on the score of the noise kernel
    (Song & Ermon's weighting, which makes the levels comparable). Its expectation is
    sigma^2/2 times the Fisher divergence between the model and the data convolved with
    N(0, sigma^2 s^2), plus a constant: the model it fits is the data *blurred* at sigma.
    A model trained at a single small sigma is close to the data's density; the score
    -eps_hat / sigma of a diffusion model's denoiser at the same level is the same quantity.

    Args:
        noise_levels: sigma values (L,), standardized units.
        scale: s (D,), the data's per-value scale; None for ones.
        site: the factor site of log f.

    Example:
        >>> loss = DenoisingScoreMatching(torch.tensor([0.1]))
        >>> # loss.differentiable_loss(ebm.model, ebm.guide, x, num_data=n)
    """

    def __init__(
        self, noise_levels: torch.Tensor, scale: torch.Tensor | None = None, site: str = ENERGY
    ) -> None:
        super().__init__(max_plate_nesting=1)
        self.noise_levels, self.scale, self.site = noise_levels, scale, site

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """The DSM loss for the rows passed, scaled to ``num_data`` rows."""
        x, y, num_data = _batch(args, kwargs)
        flat = x.flatten(1)
        levels = self.noise_levels
        sigma = levels[torch.randint(len(levels), (flat.shape[0], 1), device=flat.device)]
        if self.scale is not None:
            sigma = sigma * self.scale.to(flat)
        noise = torch.randn_like(flat)
        # Antithetic pairs x + sigma eps and x - sigma eps: the noise term that dominates the
        # gradient's variance at small sigma cancels between them; the mean is unchanged.
        flat, sigma, noise = (
            torch.cat([flat, flat]),
            torch.cat([sigma, sigma]),
            torch.cat([noise, -noise]),
        )
        create_graph = torch.is_grad_enabled()
        with torch.enable_grad():
            noisy = (flat + sigma * noise).detach().requires_grad_(True)
            rows = noisy.reshape(-1, *x.shape[1:])
            log_f, scale = row_log_factors(model, rows, y, _doubled(num_data), self.site)
            (score,) = torch.autograd.grad(log_f.sum(), noisy, create_graph=create_graph)
        residual = sigma * score + noise
        return 0.5 * scale * (residual**2).sum() / 2  # the mean of each antithetic pair


class PersistentContrastiveDivergence(_EnergyObjective):
    """Maximum likelihood by persistent contrastive divergence.

    The loss sum_data E(x) - (N / M) sum_neg E(x-) (+ ``regularization`` times the mean
    squared energies of both, Du & Mordatch's term that keeps energies bounded) has, for
    negatives x- drawn from the model, the negative log-likelihood's gradient in
    expectation: grad log Z = -E_model[grad E]. Its *value* is not a log-likelihood.

    Args:
        negatives: ``negatives(m)`` -> m model samples (m, ``*data_shape``), detached (the
            model's replay buffer of Langevin chains, advanced by each call).
        regularization: weight of the squared-energy term.
        site: the factor site of log f.
    """

    def __init__(
        self,
        negatives: Callable[[int], torch.Tensor],
        regularization: float = 0.1,
        site: str = ENERGY,
    ) -> None:
        super().__init__(max_plate_nesting=1)
        self.negatives, self.regularization, self.site = negatives, regularization, site

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """The PCD surrogate for the rows passed, scaled to ``num_data`` rows."""
        x, y, num_data = _batch(args, kwargs)
        log_f_data, scale = row_log_factors(model, x, y, num_data, self.site)
        negative = self.negatives(x.shape[0]).to(x)
        log_f_model, _ = row_log_factors(model, negative, y, num_data, self.site)
        contrast = log_f_model - log_f_data
        penalty = self.regularization * (log_f_data**2 + log_f_model**2)
        return scale * (contrast + penalty).sum()


class NoiseContrastiveEstimation(_EnergyObjective):
    """Noise-contrastive estimation against a known noise density q.

    Each data row has label 1 and ``ratio`` = nu noise rows drawn from q label 0; the
    classifier's logit is log f(x) - log nu - log q(x), where f includes the learned -log Z,
    and the loss is the negative Bernoulli log-likelihood of the observed labels (an ordinary
    Pyro observation: ``Bernoulli(logits=...).log_prob(labels)``). At its optimum f is the
    normalized density, so the learned log Z estimates the true one.

    Args:
        noise: q, a distribution over flattened examples, event shape (D,).
        ratio: nu, noise rows per data row.
        site: the factor site of log f.
    """

    def __init__(self, noise: dist.Distribution, ratio: int = 1, site: str = ENERGY) -> None:
        super().__init__(max_plate_nesting=1)
        self.noise, self.ratio, self.site = noise, ratio, site

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """The NCE loss for the rows passed (and their noise rows), scaled to ``num_data``."""
        x, y, num_data = _batch(args, kwargs)
        flat = x.flatten(1)
        drawn = self.noise.sample((self.ratio * flat.shape[0],)).to(flat)
        log_f_data, scale = row_log_factors(model, x, y, num_data, self.site)
        log_f_noise, _ = row_log_factors(model, drawn.reshape(-1, *x.shape[1:]), y, None, self.site)
        log_nu = math.log(self.ratio)
        logits = torch.cat(
            [
                log_f_data - log_nu - self.noise.log_prob(flat),
                log_f_noise - log_nu - self.noise.log_prob(drawn),
            ]
        )
        labels = torch.cat([torch.ones_like(log_f_data), torch.zeros_like(log_f_noise)])
        return -scale * dist.Bernoulli(logits=logits).log_prob(labels).sum()


class QuadratureMaximumLikelihood(_EnergyObjective):
    """Maximum likelihood with log Z by quadrature on a grid, for low-dimensional data.

    The loss is the negative log-likelihood of the ``num_data`` rows a minibatch of B stands
    for, -(num_data / B) sum_batch log f(x) + num_data log Z, with log Z from
    ``log_partition()``: a differentiable estimate (:meth:`pyrogen.EnergyDensity.
    training_log_partition` is the grid sum h^D sum_i f(u_i) over a randomly shifted grid,
    an unbiased estimate of Z over its box, whose log is below log Z in expectation by about
    half its relative variance). Where that estimate is exact its value and gradient are the
    exact negative log-likelihood's, in nats.

    Args:
        log_partition: ``log_partition()`` -> log Z, a scalar tensor differentiable in the
            energy's parameters; called once per loss.
        site: the factor site of log f.
    """

    def __init__(self, log_partition: Callable[[], torch.Tensor], site: str = ENERGY) -> None:
        super().__init__(max_plate_nesting=1)
        self.log_partition, self.site = log_partition, site

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """The negative log-likelihood of the rows passed, scaled to ``num_data`` rows."""
        x, y, num_data = _batch(args, kwargs)
        log_f, scale = row_log_factors(model, x, y, num_data, self.site)
        rows = scale * log_f.shape[0]  # num_data (or B without a data size)
        return -scale * log_f.sum() + rows * self.log_partition()


__all__ = [
    "ENERGY",
    "DenoisingScoreMatching",
    "NoiseContrastiveEstimation",
    "PersistentContrastiveDivergence",
    "QuadratureMaximumLikelihood",
    "row_log_factors",
]
