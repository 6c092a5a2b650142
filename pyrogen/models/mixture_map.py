"""The M-step of MAP-EM for :class:`~pyrogen.models.gmm.GaussianMixture`.

MAP-EM alternates the E-step of likelihood EM (:mod:`pyrogen.models.mixture_em`) with an
M-step that maximises the expected complete-data log-likelihood *plus the model's
log-prior*, so its fixed point is a mode of the Pyro model's posterior, the MAP that the
``TraceEnum_ELBO`` with Delta guides is at a stationary point of. :class:`MapMStep` is that
M-step: block-wise closed forms where the priors allow them, L-BFGS in the sites'
unconstrained coordinates where they do not. Everything here runs in float64 on
standardised data (see ``GaussianMixture.setup``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch.distributions import biject_to

from pyrogen.models.mixture_em import MixtureParameters, Statistics, expected_log_likelihood

if TYPE_CHECKING:
    from pyrogen.models.gmm import GaussianMixture

__all__ = ["REG_COVAR", "MapMStep", "covariance_prior_gradient"]

# MAP-EM's M-step: L-BFGS iterations at most, and the largest gradient entry (nats per row,
# float64) at which it stops.
_M_STEP_ITERATIONS = 20
_M_STEP_GRADIENT = 1e-6
# The block-wise M-step: most cycles of (locs | covariances, covariances | locs), most
# Newton or fixed-point iterations within a block, and the change (standardised units) at
# which both stop.
_M_STEP_CYCLES = 10
_M_STEP_INNER = 30
_M_STEP_TOLERANCE = 1e-10
# Floors on degenerate data (identical rows, a constant column, more components than
# distinct rows, a component that loses its rows), as scikit-learn's reg_covar: variances
# (eigenvalues of full and tied covariances) at least REG_COVAR in standardised units,
# and _WEIGHT_FLOOR rows added to each component's count before the weights are formed.
# The MAP is then the mode subject to these bounds, the unconstrained mode on any data
# whose variances are not that small.
REG_COVAR = 1e-6
_WEIGHT_FLOOR = 10 * torch.finfo(torch.float64).eps
# Rows (expected) below which a full component counts as empty in the M-step.
_EMPTY_ROWS = 1e-10


class MapMStep:
    """The MAP M-step of ``model`` on data whose scale is ``data_scale`` (D,) in the fit's
    units, called as ``m_step(stats, start)`` with the E-step's sufficient statistics and
    the current parameters; ``log_prior`` is ``model``'s log-prior of site values there
    (built once for the many evaluations of a fit)."""

    def __init__(
        self,
        model: GaussianMixture,
        data_scale: torch.Tensor,
        log_prior: Callable[[dict[str, torch.Tensor]], torch.Tensor],
    ) -> None:
        self.model = model
        self.data_scale = data_scale
        self.log_prior = log_prior

    def __call__(self, stats: Statistics, start: MixtureParameters) -> MixtureParameters:
        """The M-step of MAP-EM: the sites' values maximising the expected complete-data
        log-likelihood plus the model's log-prior. Weights have a closed form, locs given
        the covariances too, and so do the covariances given the locs up to a 1-D Newton
        solve (diag, spherical) or a fixed point (full, tied); the blocks are alternated
        until they stop moving (a handful of cycles: the weak priors couple them by
        O(1/N)). Where that fails (a Dirichlet concentration below 1, a nearly empty full
        component), :meth:`lbfgs` takes over from where it stopped."""
        if self.model.weight_concentration >= 1:  # else the weights' mode may be on the boundary
            params = self.block_wise(stats, start)
            if params is not None:
                return params
        try:
            params = self.lbfgs(stats, start)
        except (ValueError, RuntimeError):  # a step left the supports (degenerate data)
            return start
        return _bounded(params, start, stats[0].sum())

    def block_wise(self, stats: Statistics, start: MixtureParameters) -> MixtureParameters | None:
        """Block-wise exact MAP M-step (see :meth:`__call__`); None if it fails."""
        counts, sums, second, outer = stats
        data_scale = self.data_scale
        kind, k = self.model.covariance, self.model.n_components
        alpha = self.model.weight_concentration
        weights = (counts + _WEIGHT_FLOOR + alpha - 1) / (
            counts.sum() + k * (_WEIGHT_FLOOR + alpha - 1)
        )
        loc_variance = (self.model.loc_prior_scale * data_scale).square()  # (D,)
        log_scale = data_scale.log()
        if kind == "spherical":
            log_scale = log_scale.mean()
        width = self.model.scale_prior_width
        covariances = start.covariances
        locs = start.locs
        prior_gradient = None
        if kind in ("full", "tied"):
            prior_gradient = covariance_prior_gradient(self.model, data_scale)
        for _ in range(_M_STEP_CYCLES):
            previous = locs
            locs = _conditional_locs(counts, sums, covariances, kind, loc_variance)
            if kind in ("diag", "spherical"):
                scatter = second - 2 * locs * sums + counts[:, None] * locs.square()
                if kind == "spherical":
                    shape, scatter = counts * locs.shape[-1] + 1, scatter.sum(-1)
                else:
                    shape = counts[:, None] + 1
                covariances = _log_normal_variance_mode(shape, scatter, log_scale, width)
                covariances = covariances.clamp(min=REG_COVAR)
            else:
                # An empty component's covariance is the prior's mode: LogNormal scales
                # at exp(log_scale - width^2), uncorrelated.
                mode = torch.diag((2 * (log_scale - width**2)).exp().clamp(min=REG_COVAR))
                covariances = _fixed_point_covariance(
                    counts, sums, second, outer, locs, covariances, kind, prior_gradient, mode
                )
                if covariances is None:
                    return None
            if (locs - previous).abs().max() <= _M_STEP_TOLERANCE:
                break
        return MixtureParameters(weights, locs, covariances, kind)

    def lbfgs(self, stats: Statistics, start: MixtureParameters) -> MixtureParameters:
        """The MAP M-step by L-BFGS in the sites' unconstrained coordinates from ``start``
        (the general fallback of :meth:`__call__`). The problem has the size of the
        parameters, not of the data."""
        sites = self.model._global_sites()
        transforms = {site.name: biject_to(site.support) for site in sites}
        values = self.model._site_values(start)
        free = [  # copies: the identity transform of the locs returns start's own tensor
            transforms[name].inv(value).detach().clone().requires_grad_()
            for name, value in values.items()
        ]
        optimizer = torch.optim.LBFGS(
            free,
            max_iter=_M_STEP_ITERATIONS,
            tolerance_grad=_M_STEP_GRADIENT,
            tolerance_change=1e-12,
            line_search_fn="strong_wolfe",
        )
        n_rows = stats[0].sum()
        log_prior = self.log_prior

        def constrained() -> dict[str, torch.Tensor]:
            return {name: transforms[name](u) for name, u in zip(values, free, strict=True)}

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            current = constrained()
            objective = expected_log_likelihood(stats, self.model.mixture_parameters(current))
            loss = -(objective + log_prior(current)) / n_rows
            loss.backward()
            return loss

        optimizer.step(closure)
        with torch.no_grad():  # detached: the identity transform of the locs returns its leaf
            return self.model.mixture_parameters({k: v.detach() for k, v in constrained().items()})


def covariance_prior_gradient(
    model: GaussianMixture, data_scale: torch.Tensor
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The gradient of log p(scales) + log p(corr_cholesky) with respect to a (batch of)
    covariance matrices (full: (K, D, D), tied: (D, D)), symmetric, in closed form.

    With Sigma = L L^T and s_i = sqrt(Sigma_ii), the correlation factor is L / s, whose
    LKJ log density is sum_i a_i (log L_ii - log s_i) (a_0 = 0, a_i = 2 (eta - 1) + D -
    1 - i); since d log L_ii = (L^-1 dSigma L^-T)_ii / 2, the log L_ii terms contribute
    L^-T diag(a) L^-1 / 2. The rest depends on the diagonal only: -a_i log s_i and the
    LogNormal log density of s_i, -t_i - (t_i - log_scale_i)^2 / (2 width^2) with
    t_i = log s_i = log(Sigma_ii) / 2."""
    d = model.n_features
    log_scale, width = data_scale.log(), model.scale_prior_width
    order = torch.zeros_like(data_scale)
    if d > 1:  # the correlation site exists
        eta = model.correlation_concentration
        order[1:] = 2 * (eta - 1) + d - torch.arange(2, d + 1).to(order)
    eye = torch.eye(d, dtype=data_scale.dtype, device=data_scale.device)
    # The diagonal terms' derivative in Sigma_ii, (constant_i - slope log Sigma_ii) / Sigma_ii,
    # with the terms that do not depend on Sigma gathered once.
    constant = 0.5 * (-order - 1 + log_scale / width**2)
    slope = 0.25 / width**2
    half_order = 0.5 * order[:, None]

    def gradient(covariances: torch.Tensor) -> torch.Tensor:
        variances = covariances.diagonal(dim1=-2, dim2=-1)
        total = torch.diag_embed((constant - slope * variances.log()) / variances)
        if d > 1:
            tril = torch.linalg.cholesky(covariances)
            inverse = torch.linalg.solve_triangular(tril, eye.expand_as(tril), upper=False)
            total = total + _product(inverse.transpose(-1, -2), half_order * inverse)
        return total

    return gradient


def _conditional_locs(
    counts: torch.Tensor,
    sums: torch.Tensor,
    covariances: torch.Tensor,
    kind: str,
    loc_variance: torch.Tensor,
) -> torch.Tensor:
    """The locs maximising the expected log-likelihood plus their Normal(0, loc_variance)
    log-prior, given the covariances: (N_k + Sigma_k T^-1) mu_k = sum_n r_nk x_n."""
    if kind in ("full", "tied"):
        eye = torch.eye(sums.shape[-1], dtype=sums.dtype, device=sums.device)
        system = counts[:, None, None] * eye + covariances / loc_variance  # (K, D, D)
        return torch.linalg.solve(system, sums)
    variances = covariances if kind == "diag" else covariances[:, None]
    return sums / (counts[:, None] + variances / loc_variance)


def _log_normal_variance_mode(
    shape: torch.Tensor, scatter: torch.Tensor, log_scale: torch.Tensor, width: float
) -> torch.Tensor:
    """Variances s^2 maximising -shape log s - scatter / (2 s^2) + log N(log s | log_scale,
    width) elementwise (the expected log-likelihood of diagonal or spherical Gaussians plus
    a LogNormal prior on s, whose -log s is counted in ``shape``): Newton in t = log s on a
    strictly concave function, from the root of its first two terms."""
    scatter = scatter.clamp(min=0)
    inverse_width = 1.0 / width**2
    positive = scatter > 0
    t = torch.where(
        positive,
        0.5 * (scatter.clamp(min=torch.finfo(scatter.dtype).tiny) / shape).log(),
        log_scale - shape * width**2,
    )
    for _ in range(_M_STEP_INNER):
        spread = scatter * torch.exp(-2 * t)
        gradient = -shape + spread - (t - log_scale) * inverse_width
        step = gradient / (2 * spread + inverse_width)
        t = t + step
        if step.abs().max() <= _M_STEP_TOLERANCE:
            break
    return torch.exp(2 * t)


def _fixed_point_covariance(
    counts: torch.Tensor,
    sums: torch.Tensor,
    second: torch.Tensor,
    outer: torch.Tensor,
    locs: torch.Tensor,
    covariances: torch.Tensor,
    kind: str,
    prior_gradient: Callable[[torch.Tensor], torch.Tensor],
    mode: torch.Tensor,
) -> torch.Tensor | None:
    """Full or tied covariances maximising -n/2 log|Sigma| - tr(Sigma^-1 S)/2 + log p(Sigma)
    given the locs (S: scatter about them, n: rows). Its stationarity condition
    Sigma = (S + 2 Sigma G Sigma) / n, G the (symmetric) gradient of log p, is iterated to
    its fixed point, a contraction by about |G Sigma| / n since the prior is weak; each
    iterate's eigenvalues are floored at REG_COVAR (a singular scatter: identical rows, a
    constant column), and an empty full component (n ~ 0) stays at ``mode`` (D, D), the
    prior's. None when it does not converge or leaves the finite matrices."""
    cross = locs[:, :, None] * sums[:, None, :]
    own = counts[:, None, None] * locs[:, :, None] * locs[:, None, :]
    empty = None
    if kind == "full":
        scatter = second - cross - cross.transpose(-1, -2) + own
        rows = counts[:, None, None]
        if bool((counts <= _EMPTY_ROWS).any()):
            empty = (counts <= _EMPTY_ROWS)[:, None, None]
            rows = torch.where(empty, 1.0, rows)
            covariances = torch.where(empty, mode, covariances)
    else:
        scatter = outer - (cross + cross.transpose(-1, -2) - own).sum(0)
        rows = counts.sum()
        if bool(rows <= _EMPTY_ROWS):
            return None
    floor = REG_COVAR * torch.eye(scatter.shape[-1], dtype=scatter.dtype, device=scatter.device)
    for _ in range(_M_STEP_INNER):
        gradient = prior_gradient(covariances)
        updated = (scatter + 2 * _product(_product(covariances, gradient), covariances)) / rows
        updated = 0.5 * (updated + updated.transpose(-1, -2))
        if empty is not None:
            updated = torch.where(empty, mode, updated)
        # One read of the change also tells a non-finite iterate (its change is NaN or inf).
        change = (updated - covariances).abs().max().item()
        if not math.isfinite(change):
            return None
        floored = _floor_eigenvalues(updated, floor)
        if floored is not updated:  # the change between the iterates as they are kept
            change = (floored - covariances).abs().max().item()
        covariances = floored
        if change <= _M_STEP_TOLERANCE * covariances.diagonal(dim1=-2, dim2=-1).max().item():
            return covariances
    return None


def _floor_eigenvalues(
    covariances: torch.Tensor, floor: torch.Tensor | None = None
) -> torch.Tensor:
    """Symmetric (..., D, D) matrices with their eigenvalues below REG_COVAR raised to it
    (the same tensor, by one Cholesky test, when none is); ``floor``: REG_COVAR times the
    (D, D) identity, if at hand."""
    if floor is None:
        d = covariances.shape[-1]
        floor = REG_COVAR * torch.eye(d, dtype=covariances.dtype, device=covariances.device)
    _, info = torch.linalg.cholesky_ex(covariances - floor)
    if not bool((info != 0).any()):
        return covariances
    values, vectors = torch.linalg.eigh(covariances)
    floored = (vectors * values.clamp(min=REG_COVAR).unsqueeze(-2)) @ vectors.transpose(-1, -2)
    floored = 0.5 * (floored + floored.transpose(-1, -2))
    return torch.where((info != 0)[..., None, None], floored, covariances)


def _product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` for (K, D, D) or (D, D) matrices, straight to the batched or plain product
    (``@`` on stacks adds four view operations, which cost more than the product at D = 2)."""
    return torch.bmm(a, b) if a.dim() == 3 else torch.mm(a, b)


def _bounded(
    params: MixtureParameters, start: MixtureParameters, n_rows: torch.Tensor
) -> MixtureParameters:
    """``params`` within the bounds of the fit on degenerate data (weights of at least
    _WEIGHT_FLOOR rows, variances or eigenvalues of at least REG_COVAR); ``start`` (the
    closed-form step, always finite) where they are not finite."""
    kind = params.covariance_type
    values = (params.weights, params.locs, params.covariances)
    if not all(bool(torch.isfinite(v).all()) for v in values):
        return start
    weights = params.weights.clamp(min=_WEIGHT_FLOOR / n_rows)
    weights = weights / weights.sum()
    if kind in ("full", "tied"):
        covariances = _floor_eigenvalues(params.covariances)
    else:
        covariances = params.covariances.clamp(min=REG_COVAR)
    return MixtureParameters(weights, params.locs, covariances, kind)
