"""The forward process of variance-preserving diffusion at given levels, and the step
posterior q(z_{t-1} | z_t, x) as a distribution that knows its closed-form KL.

Two posteriors at the same z_t and the same levels differ only in the x they are
conditioned on (the guide's data, the model's estimate x_hat). Their KL then has the closed
form of Kingma et al. (2021), ``(SNR_{t-1} - SNR_t) / 2 * ||x - x_hat||^2``, while the
generic Gaussian KL subtracts two means that share the large ``z_t`` term and keeps only
about 5e-5 of relative precision in float32 (the form here keeps about 1e-7).
:class:`ForwardPosterior` remembers what it was built from, and the KL registered for a
pair of them uses the closed form where that is the case; any other pair gets the generic
Normal KL.
"""

from __future__ import annotations

from typing import NamedTuple

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch.distributions.kl import _kl_normal_normal, register_kl

__all__ = [
    "ForwardPosterior",
    "LevelTables",
    "StepLevels",
    "level_tables",
    "levels_at",
    "noise_levels",
    "step_levels",
]


class StepLevels(NamedTuple):
    """The coefficients of the reverse step from level t to s = t - 1, each (B, 1, ..., 1).

    q(z_s | z_t, x) = N(z_coef z_t + x_coef x, scale^2), and ``snr_drop`` =
    SNR_s - SNR_t > 0. ``t`` (the levels, (B,)) and ``source`` (what computed them, e.g. a
    schedule module) identify the step: two posteriors built from the same ``t`` object
    and the same source share their levels.
    """

    t: torch.Tensor
    source: object
    z_coef: torch.Tensor
    x_coef: torch.Tensor
    scale: torch.Tensor
    snr_drop: torch.Tensor

    def same_step(self, other: StepLevels) -> bool:
        """Whether ``other`` stands for the same levels (by identity: no value is read)."""
        return self.t is other.t and self.source is other.source


def noise_levels(
    gamma: torch.Tensor, t: torch.Tensor, like: torch.Tensor, event_dims: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """gamma_t, alpha_t = sqrt(sigmoid(-gamma_t)), sigma_t = sqrt(sigmoid(gamma_t)) of a
    variance-preserving schedule, at integer levels t.

    Args:
        gamma: the schedule's gamma_0..gamma_T, shape (T + 1,).
        t: levels in 0..T, int64 of any batch shape (B,).
        like: a tensor whose dtype the results take.
        event_dims: dims of one example, so that the results broadcast with z (B, ...).

    Returns:
        three tensors of shape (B, 1, ..., 1) (``event_dims`` ones).
    """
    gamma = gamma.to(like.dtype)[t].reshape(*t.shape, *([1] * event_dims))
    return gamma, torch.sigmoid(-gamma).sqrt(), torch.sigmoid(gamma).sqrt()


class LevelTables(NamedTuple):
    """Every level's quantities of a schedule, computed at once: ``levels`` (T + 1, 3) holds
    gamma_t, alpha_t, sigma_t; ``steps`` (T + 1, 4) the reverse step from t to t - 1 as
    z_coef, x_coef, scale, snr_drop (:class:`StepLevels`; row 0, no step, is NaN);
    ``source`` is what they were computed from."""

    levels: torch.Tensor
    steps: torch.Tensor
    source: object


def level_tables(gamma: torch.Tensor, dtype: torch.dtype, source: object) -> LevelTables:
    """The :class:`LevelTables` of gamma_0..gamma_T (T + 1,), computed in float64 (through
    VDM's expm1 / softplus forms, so no difference of nearby numbers is formed) and rounded
    once to ``dtype``; differentiable in gamma.

    Example:
        >>> tables = level_tables(torch.linspace(-5.0, 5.0, 11), torch.float32, source=None)
        >>> tables.levels.shape, tables.steps.shape
        (torch.Size([11, 3]), torch.Size([11, 4]))
    """
    gamma = gamma.to(torch.float64)
    alpha, sigma = torch.sigmoid(-gamma).sqrt(), torch.sigmoid(gamma).sqrt()
    gamma_s, gamma_t = gamma[:-1], gamma[1:]
    # sigma^2_{t|s} = 1 - alpha_t^2 / alpha_s^2 and SNR_s - SNR_t
    sigma2_ts = -torch.expm1(F.softplus(gamma_s) - F.softplus(gamma_t))
    snr_drop = -torch.exp(-gamma_s) * torch.expm1(gamma_s - gamma_t)
    sigma2_s, sigma2_t = sigma[:-1] ** 2, sigma[1:] ** 2
    steps = torch.stack(
        [
            alpha[1:] / alpha[:-1] * sigma2_s / sigma2_t,
            alpha[:-1] * sigma2_ts / sigma2_t,
            (sigma2_ts * sigma2_s / sigma2_t).sqrt(),
            snr_drop,
        ],
        -1,
    )
    steps = torch.cat([steps.new_full((1, 4), torch.nan), steps])
    levels = torch.stack([gamma, alpha, sigma], -1)
    return LevelTables(levels.to(dtype), steps.to(dtype), source)


def levels_at(
    tables: LevelTables, t: torch.Tensor | int, event_dims: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """gamma_t, alpha_t, sigma_t at levels t (int64 (B,), or one int), each (B, 1, ..., 1)
    (``event_dims`` ones; () for an int) to broadcast with z."""
    if isinstance(t, int):
        return tables.levels[t].unbind(-1)
    rows = tables.levels[t].reshape(*t.shape, *([1] * event_dims), 3)
    return rows.unbind(-1)


def step_levels(tables: LevelTables, t: torch.Tensor, event_dims: int) -> StepLevels:
    """The reverse step's coefficients from levels t (int64 (B,), in 1..T) to t - 1, each
    (B, 1, ..., 1) (see :class:`StepLevels`)."""
    rows = tables.steps[t].reshape(*t.shape, *([1] * event_dims), 4)
    return StepLevels(t, tables.source, *rows.unbind(-1))


class ForwardPosterior(dist.Normal):
    """q(z_{t-1} | z_t, x) = N(z_coef z_t + x_coef x, scale^2), the forward process run
    backwards one step given x, remembering ``z_t``, ``x`` and the step's ``levels``.

    Args:
        z_t: the latent at level t, (B, ...).
        x: what the step is conditioned on (data, or a denoiser's estimate), (B, ...).
        levels: the step's :class:`StepLevels`, broadcasting with z_t.

    Example:
        >>> tables = level_tables(torch.linspace(-5.0, 5.0, 11), torch.float32, source=None)
        >>> z_t, x = torch.zeros(3, 2), torch.ones(3, 2)
        >>> levels = step_levels(tables, torch.tensor([4, 5, 6]), 1)
        >>> ForwardPosterior(z_t, x, levels).batch_shape
        torch.Size([3, 2])
    """

    def __init__(self, z_t: torch.Tensor, x: torch.Tensor, levels: StepLevels) -> None:
        loc = levels.z_coef * z_t + levels.x_coef * x
        super().__init__(loc, levels.scale.expand_as(loc), validate_args=False)
        self.z_t, self.x, self.levels = z_t, x, levels

    def expand(self, batch_shape, _instance=None) -> ForwardPosterior:
        # Pyro's plates expand every site's distribution; z_t and x still broadcast with it.
        new = self._get_checked_instance(ForwardPosterior, _instance)
        new.z_t, new.x, new.levels = self.z_t, self.x, self.levels
        return super().expand(batch_shape, _instance=new)


@register_kl(ForwardPosterior, ForwardPosterior)
def _kl_forward_posteriors(q: ForwardPosterior, p: ForwardPosterior) -> torch.Tensor:
    """KL(q || p): (SNR_s - SNR_t) / 2 (x_q - x_p)^2 per value where both share z_t and
    levels (equal scales, and means that differ only through x), else the Normal KL."""
    if q.z_t is not p.z_t or not q.levels.same_step(p.levels):
        return _kl_normal_normal(q, p)
    kl = 0.5 * q.levels.snr_drop * (q.x - p.x) ** 2
    return kl.expand(torch.broadcast_shapes(q.batch_shape, p.batch_shape))
