"""Samplers and normalizers for unnormalized densities f(u) = exp(log_density(u)) on R^D.

Everything here takes ``log_density``, a function of rows u (N, D) returning (N,), and works
with the global torch random state, so a caller that seeds it (or forks it) gets the same
result every time:

* :func:`langevin`: the unadjusted Langevin algorithm (ULA), u' = u + (h/2) grad log f(u) +
  sqrt(h) xi. Cheap, and biased by O(h): its chains sample a slightly wider density.
* :func:`mala`: the Metropolis-adjusted Langevin algorithm, ULA's proposal accepted with
  the Metropolis-Hastings probability, so f is exactly invariant; the step size h is adapted
  during the first half of the steps to a target acceptance rate (0.574, optimal for MALA
  in high dimensions, Roberts & Rosenthal 1998) and then held fixed.
* :func:`quadrature_log_partition`: log Z = log of the integral of f by the midpoint rule on
  a grid (:func:`quadrature_grid`), for D <= 3, with an error estimate.
* :func:`ais_log_partition`: annealed importance sampling (Neal 2001) from a standard
  normal base to f, for any D, with the Monte Carlo standard error.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

#: log f(u): rows (N, D) -> (N,).
LogDensity = Callable[[torch.Tensor], torch.Tensor]

#: The acceptance rate MALA's step size is adapted to.
MALA_TARGET_ACCEPTANCE = 0.574
#: Most dimensions quadrature is offered for (the grid has points ** D nodes).
MAX_QUADRATURE_DIMS = 3
# Rows of the grid evaluated at once.
_GRID_CHUNK = 2**16


class DivergedChainsError(RuntimeError):
    """A Markov chain left the finite numbers (its step size is too large for the energy)."""


@dataclass(frozen=True)
class PartitionEstimate:
    """An estimate of log Z, the log of the normalizer of exp(-E).

    Attributes:
        log_z: the estimate, nats.
        error: for ``"quadrature"`` an estimated absolute error of ``log_z`` (see
            :func:`quadrature_log_partition`); for ``"ais"`` the Monte Carlo standard error.
        method: ``"quadrature"`` or ``"ais"``.
        description: what the number is and which way it errs, for reports.
    """

    log_z: float
    error: float
    method: str
    description: str


def log_density_and_gradient(
    log_density: LogDensity, u: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """log f(u) (N,) and its gradient (N, D), both detached, for rows u (N, D)."""
    with torch.enable_grad():
        u = u.detach().requires_grad_(True)
        value = log_density(u)
        (gradient,) = torch.autograd.grad(value.sum(), u)
    return value.detach(), gradient


def _check_finite(u: torch.Tensor, sampler: str, step_size: float) -> None:
    if not torch.isfinite(u).all():
        raise DivergedChainsError(
            f"{sampler}: the chains diverged (non-finite values) at step size {step_size:g}; "
            "expected a smaller step size or a smoother energy"
        )


def langevin(
    log_density: LogDensity,
    u: torch.Tensor,
    *,
    steps: int,
    step_size: float,
    progress: bool = False,
    on_step: Callable[[torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """Unadjusted Langevin dynamics from rows u (N, D): ``steps`` steps of size h;
    ``on_step(u)`` is called with the states (N, D) after each step (e.g. to keep the chains'
    paths for effective sample sizes).

    Returns:
        the chains' last states (N, D), detached.

    Raises:
        DivergedChainsError: a chain left the finite numbers.
    """
    noise_scale = math.sqrt(step_size)
    for _ in tqdm(range(steps), disable=not progress, desc="Langevin", leave=False):
        _, gradient = log_density_and_gradient(log_density, u)
        u = u + 0.5 * step_size * gradient + noise_scale * torch.randn_like(u)
        _check_finite(u, "langevin", step_size)
        if on_step is not None:
            on_step(u.detach())
    return u.detach()


@dataclass(frozen=True)
class MALAResult:
    """MALA's last states (N, D), its step size after adaptation, and the mean acceptance
    probability over the steps after adaptation (over all of them if none were after)."""

    samples: torch.Tensor
    step_size: float
    acceptance: float


def _mala_step(log_density, u, value, gradient, step_size):
    """One MALA transition of every chain; returns (u, value, gradient, acceptance (N,))."""
    proposal = u + 0.5 * step_size * gradient + math.sqrt(step_size) * torch.randn_like(u)
    proposed_value, proposed_gradient = log_density_and_gradient(log_density, proposal)

    def log_q(to, start, start_gradient):  # log N(to; start + h/2 grad, h I), up to a constant
        return -((to - start - 0.5 * step_size * start_gradient) ** 2).sum(-1) / (2 * step_size)

    log_ratio = (
        proposed_value
        - value
        + log_q(u, proposal, proposed_gradient)
        - log_q(proposal, u, gradient)
    )
    # A non-finite proposal is rejected, not propagated.
    log_ratio = torch.where(torch.isfinite(log_ratio), log_ratio, -math.inf)
    acceptance = log_ratio.clamp(max=0).exp()
    accept = torch.rand_like(acceptance) < acceptance
    where = accept.unsqueeze(-1)
    return (
        torch.where(where, proposal, u),
        torch.where(accept, proposed_value, value),
        torch.where(where, proposed_gradient, gradient),
        acceptance,
    )


def mala(
    log_density: LogDensity,
    u: torch.Tensor,
    *,
    steps: int,
    step_size: float = 0.1,
    target_acceptance: float = MALA_TARGET_ACCEPTANCE,
    adapt: bool = True,
    progress: bool = False,
    on_step: Callable[[torch.Tensor], None] | None = None,
) -> MALAResult:
    """Metropolis-adjusted Langevin from rows u (N, D), f exactly invariant.

    With ``adapt``, the first half of the steps tunes one step size for all chains by a
    Robbins-Monro update of log h towards ``target_acceptance`` (the mean acceptance
    probability over the chains); the second half keeps it fixed, so those steps are a
    proper MCMC kernel of f. ``on_step(u)`` is called with the states (N, D) after each
    step.

    Returns:
        :class:`MALAResult`.

    Raises:
        DivergedChainsError: the start has non-finite log-density.
    """
    value, gradient = log_density_and_gradient(log_density, u)
    _check_finite(value, "mala", step_size)
    accepted = []
    adapting = steps // 2 if adapt else 0
    for step in tqdm(range(steps), disable=not progress, desc="MALA", leave=False):
        u, value, gradient, acceptance = _mala_step(log_density, u, value, gradient, step_size)
        if on_step is not None:
            on_step(u.detach())
        rate = float(acceptance.mean())
        if step < adapting:
            step_size *= math.exp((rate - target_acceptance) / math.sqrt(step + 1))
        else:
            accepted.append(rate)
    mean = sum(accepted) / len(accepted) if accepted else rate if steps else float("nan")
    return MALAResult(u.detach(), step_size, mean)


def _check_quadrature_dims(dims: int) -> None:
    if not 1 <= dims <= MAX_QUADRATURE_DIMS:
        raise ValueError(
            f"quadrature: expected at most {MAX_QUADRATURE_DIMS} dimensions, got {dims}; use AIS"
        )


def quadrature_grid(
    dims: int,
    *,
    bound: float,
    points: int,
    offset: torch.Tensor | None = None,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, float]:
    """The nodes (points ** D, D) of a regular grid on the box [-bound, bound]^D (D <= 3),
    ``points`` per side, and their spacing h.

    Node i of an axis is at -bound + h (i + offset), offset (D,) in [0, 1): 0.5 (None) is
    the midpoint rule; an offset drawn uniformly makes h^D sum_i f(node_i) an unbiased
    estimate of the integral of f over the box (randomized quadrature).
    """
    _check_quadrature_dims(dims)
    if points < 1:
        raise ValueError(f"points: expected a positive number, got {points}")
    spacing = 2 * bound / points
    index = torch.arange(points, dtype=dtype, device=device)
    shift = torch.full((dims,), 0.5, dtype=dtype, device=device) if offset is None else offset
    axes = [-bound + spacing * (index + shift[d].to(dtype)) for d in range(dims)]
    grid = torch.cartesian_prod(*axes).reshape(-1, dims)
    return grid, spacing


def quadrature_log_partition(
    log_density: LogDensity,
    dims: int,
    *,
    bound: float,
    points: int,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
) -> PartitionEstimate:
    """log Z = log of the integral of f over R^D by the midpoint rule on the box
    [-bound, bound]^D, ``points`` nodes per side (D <= 3).

    The stated ``error`` is the sum of two numbers: the change of log Z when every other node
    is dropped (the rule with twice the spacing; the midpoint rule on a smooth, decaying f
    converges so fast that this greatly over-states the error at the full grid), and the
    share of Z in the outermost layer of cells, which is large when the box cuts off mass
    (then widen ``bound``). It is an estimate, not a guaranteed bound.

    Returns:
        :class:`PartitionEstimate` with method ``"quadrature"``.
    """
    _check_quadrature_dims(dims)  # first: a grid's size means nothing above 3 dimensions
    if points < 4 or points % 2:
        raise ValueError(f"points: expected an even number >= 4, got {points}")
    grid, spacing = quadrature_grid(dims, bound=bound, points=points, dtype=dtype, device=device)
    with torch.no_grad():
        values = torch.cat([log_density(chunk) for chunk in grid.split(_GRID_CHUNK)])
    values = values.to(torch.float64).reshape((points,) * dims)
    log_z = torch.logsumexp(values.reshape(-1), 0) + dims * math.log(spacing)
    coarse = values[(slice(None, None, 2),) * dims]
    log_z_coarse = torch.logsumexp(coarse.reshape(-1), 0) + dims * math.log(2 * spacing)
    inner = values[(slice(1, -1),) * dims]
    inner_share = torch.logsumexp(inner.reshape(-1), 0) + dims * math.log(spacing) - log_z
    edge_share = -torch.expm1(inner_share)  # the outermost layer's share of Z
    error = float((log_z - log_z_coarse).abs() + edge_share.clamp(min=0))
    description = (
        f"log Z by the midpoint rule on [-{bound:g}, {bound:g}]^{dims}, {points} nodes per "
        f"side; error estimate {error:.2g} nats"
    )
    return PartitionEstimate(float(log_z), error, "quadrature", description)


def ais_log_partition(
    log_density: LogDensity,
    dims: int,
    *,
    chains: int,
    steps: int,
    step_size: float = 0.1,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> PartitionEstimate:
    """log Z by annealed importance sampling from the standard normal base N(0, I_D).

    The chains move through f_k = base^(1 - b_k) f^(b_k), b from 0 to 1 on a sigmoid
    schedule of ``steps`` temperatures, one MALA transition at each (its step size adapted
    towards the target acceptance from the chains' acceptance at the previous temperature);
    each chain's log weight adds (b_k - b_(k-1)) (log f - log base) before the move.

    What it estimates: the mean weight is unbiased for Z, so by Jensen's inequality its
    log, ``log_z``, is *below* log Z in expectation (a stochastic lower bound), and a
    log-density -E(x) - log_z is *above* the true one in expectation. ``error`` is the Monte
    Carlo standard error of ``log_z`` (delta method: the weights' standard deviation over
    their mean over sqrt(chains)); the gap to log Z shrinks as ``steps`` grows.

    Returns:
        :class:`PartitionEstimate` with method ``"ais"``.
    """
    if chains < 2:
        raise ValueError(f"chains: expected at least 2 for a standard error, got {chains}")
    ramp = torch.sigmoid(torch.linspace(-6, 6, steps + 1, dtype=torch.float64))
    betas = ((ramp - ramp[0]) / (ramp[-1] - ramp[0])).tolist()
    normal_constant = 0.5 * dims * math.log(2 * math.pi)

    def log_base(u: torch.Tensor) -> torch.Tensor:
        return -0.5 * (u**2).sum(-1) - normal_constant

    u = torch.randn(chains, dims, dtype=dtype, device=device)
    log_weights = torch.zeros(chains, dtype=torch.float64, device=device)
    for previous, beta in tqdm(
        list(zip(betas[:-1], betas[1:], strict=True)), disable=not progress, desc="AIS"
    ):
        with torch.no_grad():
            log_weights += (beta - previous) * (log_density(u) - log_base(u)).double()

        def annealed(v: torch.Tensor, beta: float = beta) -> torch.Tensor:
            return (1 - beta) * log_base(v) + beta * log_density(v)

        value, gradient = log_density_and_gradient(annealed, u)
        u, _, _, acceptance = _mala_step(annealed, u, value, gradient, step_size)
        step_size *= math.exp(float(acceptance.mean()) - MALA_TARGET_ACCEPTANCE)
    _check_finite(log_weights, "ais", step_size)
    log_z = torch.logsumexp(log_weights, 0) - math.log(chains)
    weights = (log_weights - log_weights.max()).exp()
    error = float(weights.std() / (weights.mean() * math.sqrt(chains)))
    description = (
        f"log Z by AIS from N(0, I), {chains} chains x {steps} temperatures: a stochastic "
        f"lower bound (below log Z in expectation), standard error {error:.2g} nats"
    )
    return PartitionEstimate(float(log_z), error, "ais", description)
