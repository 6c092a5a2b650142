"""k-means++ and expectation-maximisation for Gaussian mixtures, in plain torch.

These give :class:`~pyrogen.models.gmm.GaussianMixture` its fit: k-means++ starts, EM for
the likelihood, then EM whose M-step maximises the expected complete-data log-likelihood
plus the model's log-prior (:func:`expected_log_likelihood` is that first term, from the
E-step's sufficient statistics), which converges to a mode of the model's posterior.
Everything runs on the data's device, in float64, and streams over rows in chunks so that
memory stays bounded for any number of rows.

Covariances are passed around in the natural shape of each covariance type:
``full`` (K, D, D), ``tied`` (D, D), ``diag`` (K, D) variances, ``spherical`` (K,) variances.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from pyro.distributions import TorchDistribution, constraints

COVARIANCE_TYPES = ("full", "diag", "spherical", "tied")

# torch.multinomial draws from at most 2^24 categories.
_MULTINOMIAL_CATEGORIES = 2**24

# Rows per chunk are chosen so that a (K, chunk, D) temporary holds about this many numbers.
_CHUNK_ELEMENTS = 2**20


@dataclass
class MixtureParameters:
    """Weights (K,), locs (K, D) and covariances (shape per covariance type, see module).

    ``scale_tril`` (the Cholesky factor of full or tied covariances) may be given when it is
    already known, which spares a factorisation and keeps gradients exact.
    """

    weights: torch.Tensor
    locs: torch.Tensor
    covariances: torch.Tensor
    covariance_type: str
    scale_tril: torch.Tensor | None = None

    def precision_cholesky(self) -> torch.Tensor:
        """Upper factor P with P P^T = Sigma^-1: (K, D, D) for full, (D, D) tied, else 1/sd."""
        if self.covariance_type in ("full", "tied"):
            lower = self.scale_tril
            if lower is None:
                lower = torch.linalg.cholesky(self.covariances)
            eye = torch.eye(lower.shape[-1], dtype=lower.dtype, device=lower.device)
            inverse = torch.linalg.solve_triangular(lower, eye.expand_as(lower), upper=False)
            return inverse.transpose(-1, -2)
        return self.covariances.rsqrt()


class GaussianComponents(TorchDistribution):
    """p(x | z): the Gaussian component picked by each assignment z of a mixture.

    ``assignment`` may be sampled (shape (N,)) or enumerated by Pyro (shape (K, 1, ...));
    the log density of every row under every component is computed once as an (N, K)
    table with matrix products, then indexed, which is far cheaper than evaluating a
    batched ``MultivariateNormal`` on the (K, N, D) broadcast.

    Args:
        params: the mixture (gradients flow through it).
        assignment: integer tensor of component indices; its shape is the batch shape.
    """

    arg_constraints: dict = {}
    support = constraints.real_vector

    def __init__(
        self, params: MixtureParameters, assignment: torch.Tensor, validate_args: bool | None = None
    ) -> None:
        self.params = params
        self.assignment = assignment
        event_shape = params.locs.shape[-1:]
        super().__init__(assignment.shape, event_shape, validate_args=False)

    def expand(self, batch_shape, _instance=None) -> GaussianComponents:
        return GaussianComponents(self.params, self.assignment.expand(batch_shape))

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        table = component_log_density(value.reshape(-1, value.shape[-1]), self.params)
        assignment = self.assignment
        if value.dim() == 2 and assignment.dim() >= 1:
            if assignment.shape[-1] == 1 or assignment.stride(-1) == 0:
                # One component for all rows per leading index (Pyro's enumeration, (K, 1)
                # broadcast over rows): whole columns of the table, without a per-row gather
                # and its scatter in the backward pass.
                picked = assignment[..., 0]
                columns = torch.arange(table.shape[1], device=table.device)
                if picked.shape == columns.shape and torch.equal(picked, columns):
                    return table.T  # every component in order: no copy at all
                return table.T[picked]
        rows = torch.arange(table.shape[0], device=table.device).reshape(value.shape[:-1])
        return table[rows, assignment]

    def sample(self, sample_shape: tuple[int, ...] = ()) -> torch.Tensor:
        params, index = self.params, self.assignment
        locs = params.locs[index]
        if params.covariance_type in ("full", "tied"):
            tril = (
                params.scale_tril
                if params.scale_tril is not None
                else torch.linalg.cholesky(params.covariances)
            )
            tril = tril[index] if params.covariance_type == "full" else tril
            component = torch.distributions.MultivariateNormal(locs, scale_tril=tril)
        else:
            variances = params.covariances[index]
            if params.covariance_type == "spherical":
                variances = variances.unsqueeze(-1)
            component = torch.distributions.Normal(locs, variances.sqrt())
        with torch.no_grad():
            return component.sample(sample_shape)


def _chunk_size(n_components: int, n_features: int) -> int:
    return max(1, _CHUNK_ELEMENTS // max(1, n_components * n_features))


def component_log_density(x: torch.Tensor, params: MixtureParameters) -> torch.Tensor:
    """log N(x_n | mu_k, Sigma_k) for every row and component.

    Args:
        x: data of shape (N, D).
        params: the mixture.

    Returns:
        Tensor of shape (N, K).
    """
    locs, kind = params.locs, params.covariance_type
    n_features = x.shape[-1]
    precision = params.precision_cholesky()
    constant = -0.5 * n_features * math.log(2 * math.pi)
    if kind in ("full", "tied"):
        # ||(x - mu) P||^2 as two matrix products, which is much faster than solving per row.
        if kind == "full":
            # One (N, D) x (D, K*D) product instead of K small batched ones.
            n_components, n_features = locs.shape
            stacked = precision.transpose(0, 1).reshape(n_features, n_components * n_features)
            offset = torch.einsum("kd,kde->ke", locs, precision).reshape(1, -1)
            projected = torch.addmm(offset, x, stacked, beta=-1)  # x P_k - mu_k P_k
            maha = projected.square().reshape(-1, n_components, n_features).sum(-1)  # (N, K)
            log_det = precision.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        else:
            projected = x.matmul(precision).unsqueeze(1) - locs.matmul(precision)  # (N, K, D)
            maha = projected.square().sum(-1)
            log_det = precision.diagonal().log().sum().expand(locs.shape[0])
        return constant + log_det - 0.5 * maha
    inv_sd = precision if kind == "diag" else precision.unsqueeze(-1).expand_as(locs)
    inv_var = inv_sd.square()
    maha = x.square() @ inv_var.T - 2 * x @ (locs * inv_var).T + (locs.square() * inv_var).sum(-1)
    return constant + inv_sd.log().sum(-1) - 0.5 * maha


def mixture_log_prob(x: torch.Tensor, params: MixtureParameters) -> torch.Tensor:
    """Marginal log density log sum_k w_k N(x_n | mu_k, Sigma_k), shape (N,), in chunks."""
    size = _chunk_size(params.locs.shape[0], x.shape[-1])
    log_weights = params.weights.log()
    return torch.cat(
        [
            torch.logsumexp(component_log_density(x[i : i + size], params) + log_weights, -1)
            for i in range(0, x.shape[0], size)
        ]
    )


def kmeans_plusplus(
    x: torch.Tensor,
    n_components: int,
    generator: torch.Generator,
    n_starts: int | None = None,
) -> torch.Tensor:
    """Greedy k-means++ seeding (Arthur & Vassilvitskii 2007, with 2 + log K trials per pick).

    With ``n_starts``, that many independent seedings run side by side: each pick draws
    every start's candidates at once and scores them against all rows with one matrix
    product (squared distances as ``|x|^2 + |c|^2 - 2 x.c``).

    Args:
        x: data of shape (N, D).
        n_components: number of centres K.
        generator: torch random generator on ``x``'s device.
        n_starts: independent seedings S; None for one, returned without the S axis.

    Returns:
        centres of shape (K, D), or (S, K, D) with ``n_starts``; rows of ``x``.
    """
    n_rows = x.shape[0]
    starts = 1 if n_starts is None else n_starts
    trials = 2 + int(math.log(n_components))
    squared = x.square().sum(-1)  # (N,)

    def distances(index: torch.Tensor) -> torch.Tensor:  # (S, T) rows -> (S, T, N)
        centres = x[index.flatten()]
        product = torch.addmm(squared[index.flatten(), None], centres, x.T, alpha=-2)
        return (product + squared).clamp_(min=0).reshape(*index.shape, n_rows)

    first = torch.randint(n_rows, (starts, 1), generator=generator, device=x.device)
    chosen = [first[:, 0]]
    closest = distances(first)[:, 0]  # (S, N)
    lanes = torch.arange(starts, device=x.device)
    for _ in range(1, n_components):
        total = closest.sum(-1, keepdim=True)
        # A start whose rows all sit on its centres picks any row.
        weights = torch.where(total > 0, closest, torch.ones_like(closest))
        if n_rows <= _MULTINOMIAL_CATEGORIES:
            candidates = torch.multinomial(weights, trials, replacement=True, generator=generator)
        else:  # beyond torch.multinomial's reach: invert the cumulative distribution
            cumulative = weights.cumsum(-1)
            u = torch.rand(
                starts, trials, generator=generator, device=x.device, dtype=cumulative.dtype
            )
            candidates = torch.searchsorted(cumulative, u * cumulative[:, -1:])
            candidates = candidates.clamp_max(n_rows - 1)
        updated = torch.minimum(closest.unsqueeze(1), distances(candidates))  # (S, T, N)
        best = updated.sum(-1).argmin(-1)
        closest = updated[lanes, best]
        chosen.append(candidates[lanes, best])
    centres = x[torch.stack(chosen, 1)]  # (S, K, D)
    return centres[0] if n_starts is None else centres


def kmeans(
    x: torch.Tensor, centres: torch.Tensor, max_iter: int = 100, tol: float = 1e-4
) -> torch.Tensor:
    """Lloyd iterations from ``centres``; returns hard labels of shape (N,).

    Stops when the centres move by less than ``tol`` times the data's mean variance (squared
    distance, summed over centres), as scikit-learn's KMeans does.
    """
    threshold = tol * x.var(0).mean() if x.shape[0] > 1 else 0.0

    def nearest(centres: torch.Tensor) -> torch.Tensor:
        # ||x - c||^2 up to the per-row constant ||x||^2: one matrix product
        return (centres.square().sum(-1) - 2 * x @ centres.T).argmin(-1)

    labels = nearest(centres)
    for _ in range(max_iter):
        counts = torch.bincount(labels, minlength=centres.shape[0]).to(x.dtype)
        sums = torch.zeros_like(centres).index_add_(0, labels, x)
        occupied = counts > 0
        moved = torch.where(occupied[:, None], sums / counts.clamp(min=1)[:, None], centres)
        shift = (moved - centres).square().sum()
        centres = moved
        labels = nearest(centres)
        if shift <= threshold:
            break
    return labels


@functools.lru_cache(maxsize=64)
def _upper_triangle(
    n_features: int, device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows and columns (each (D (D + 1) / 2,), int64) of a D x D matrix's entries i <= j,
    and each entry's weight in -x^T A x / 2 for a symmetric A (1/2 on the diagonal, 1 off
    it: the pair (i, j), (j, i) counted once); made once per size, device and dtype, as the
    EM of a few hundred rows is bound by its number of operations."""
    rows, cols = torch.triu_indices(n_features, n_features, device=device)
    weights = torch.where(rows == cols, 0.5, 1.0).to(dtype)
    return rows, cols, weights


def _features(x: torch.Tensor, covariance_type: str) -> torch.Tensor:
    """Per-row sufficient statistics [quadratic terms, x, 1]: x_i x_j (i <= j) for full and
    tied covariances, x_d^2 for diag and spherical. Every component's log density is then
    linear in them (:func:`_natural_parameters`), and so are the E-step's moments."""
    if covariance_type in ("full", "tied"):
        rows, cols, _ = _upper_triangle(x.shape[1], x.device, x.dtype)
        quadratic = x[:, rows] * x[:, cols]
    else:
        quadratic = x.square()
    return torch.cat([quadratic, x, x.new_ones(x.shape[0], 1)], 1)


def _natural_parameters(params: MixtureParameters) -> torch.Tensor:
    """W of shape (F, K) with ``_features(x) @ W`` = log w_k + log N(x | mu_k, Sigma_k)."""
    locs, kind = params.locs, params.covariance_type
    n_components, n_features = locs.shape
    precision = params.precision_cholesky()
    constant = params.weights.log() - 0.5 * n_features * math.log(2 * math.pi)
    if kind in ("full", "tied"):
        # Sigma^-1 (K, D, D); products straight to (b)mm: at D = 2 the views that @ and
        # einsum add around them cost more than the products.
        if kind == "full":
            inverse = torch.bmm(precision, precision.transpose(-1, -2))
        else:
            inverse = torch.mm(precision, precision.T).expand(n_components, -1, -1)
        log_det = precision.diagonal(dim1=-2, dim2=-1).log().sum(-1)  # -log|Sigma| / 2
        rows, cols, weights = _upper_triangle(n_features, locs.device, locs.dtype)
        # -x^T L x / 2: the diagonal once, each off-diagonal pair twice
        quadratic = inverse[:, rows, cols] * -weights
        linear = torch.bmm(inverse, locs.unsqueeze(-1)).squeeze(-1)
        offset = constant + log_det - 0.5 * (linear * locs).sum(-1)
    else:
        inv_sd = precision if kind == "diag" else precision.unsqueeze(-1).expand_as(locs)
        inv_var = inv_sd.square()
        quadratic = -0.5 * inv_var
        linear = locs * inv_var
        offset = constant + inv_sd.log().sum(-1) - 0.5 * (locs.square() * inv_var).sum(-1)
    return torch.cat([quadratic, linear, offset.unsqueeze(-1)], 1).T


def _unpack(moments: torch.Tensor, n_features: int, covariance_type: str):
    """Counts, sums and second moments from ``responsibilities.T @ _features(x)``."""
    counts, sums = moments[:, -1], moments[:, -1 - n_features : -1]
    quadratic = moments[:, : -1 - n_features]
    if covariance_type == "full":
        rows, cols, _ = _upper_triangle(n_features, moments.device, moments.dtype)
        second = moments.new_zeros(moments.shape[0], n_features, n_features)
        second[:, rows, cols] = quadratic
        second[:, cols, rows] = quadratic
    elif covariance_type == "tied":
        second = moments.new_zeros(())
    else:
        second = quadratic
    return counts, sums, second


def _m_step(
    stats: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    n_rows: int,
    covariance_type: str,
    total_outer: torch.Tensor,
    reg: torch.Tensor,
) -> MixtureParameters:
    counts, sums, second = stats
    counts = counts + 10 * torch.finfo(counts.dtype).eps
    locs = sums / counts[:, None]
    if covariance_type == "full":
        cov = second / counts[:, None, None] - locs[:, :, None] * locs[:, None, :]
        cov = cov + torch.diag_embed(reg).expand_as(cov)
    elif covariance_type == "tied":
        cov = total_outer - (counts[:, None, None] * locs[:, :, None] * locs[:, None, :]).sum(0)
        cov = cov / n_rows + torch.diag(reg)
    else:
        variances = second / counts[:, None] - locs.square() + reg
        cov = variances if covariance_type == "diag" else variances.mean(-1)
    return MixtureParameters(counts / counts.sum(), locs, cov, covariance_type)


def _statistics(x: torch.Tensor, responsibilities: torch.Tensor, covariance_type: str):
    counts = responsibilities.sum(0)
    sums = responsibilities.T @ x
    if covariance_type == "full":
        # one (D, n) x (n, D) product per component: no (K, n, D) temporary
        second = torch.stack([(x * r.unsqueeze(-1)).T @ x for r in responsibilities.T])
    elif covariance_type == "tied":
        second = torch.zeros((), dtype=x.dtype, device=x.device)
    else:
        second = responsibilities.T @ x.square()
    return counts, sums, second


#: E-step sufficient statistics: counts (K,), sums (K, D), second moments ((K, D, D) full,
#: (K, D) diag and spherical, unused for tied) and the data's x^T x (D, D).
Statistics = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def expected_log_likelihood(stats: Statistics, params: MixtureParameters) -> torch.Tensor:
    """sum_n sum_k r_nk log(w_k N(x_n | mu_k, Sigma_k)) from the E-step's statistics.

    Differentiable in ``params``; its gradient at the parameters of the E-step equals the
    log-likelihood's (the EM identity), so a maximiser of this plus the log-prior that
    leaves the parameters unchanged is a stationary point of the log joint.

    Args:
        stats: :data:`Statistics` of responsibilities r_nk under any parameters.
        params: the mixture to score.

    Returns:
        a scalar tensor, in nats (summed over rows).
    """
    counts, sums, second, outer = stats
    locs, kind = params.locs, params.covariance_type
    n_features = locs.shape[-1]
    total = counts @ params.weights.log() - 0.5 * counts.sum() * n_features * math.log(2 * math.pi)
    # Scatter about each mean: sum_n r_nk (x_n - mu_k)(x_n - mu_k)^T, from the moments.
    cross = locs[:, :, None] * sums[:, None, :]
    if kind in ("full", "tied"):
        tril = params.scale_tril
        if tril is None:
            tril = torch.linalg.cholesky(params.covariances)
        own = counts[:, None, None] * locs[:, :, None] * locs[:, None, :]
        if kind == "full":
            scatter = second - cross - cross.transpose(-1, -2) + own
            weight = counts
        else:
            scatter = outer - (cross + cross.transpose(-1, -2) - own).sum(0)
            weight = counts.sum()
        log_det = 2 * tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        trace = (torch.cholesky_inverse(tril) * scatter).sum((-2, -1))
        return total - 0.5 * (weight * log_det + trace).sum()
    scatter = second - 2 * locs * sums + counts[:, None] * locs.square()  # (K, D)
    variances = params.covariances
    if kind == "spherical":
        return (
            total
            - 0.5 * (counts * n_features * variances.log() + scatter.sum(-1) / variances).sum()
        )
    return total - 0.5 * (counts[:, None] * variances.log() + scatter / variances).sum()


def hard_assignment_parameters(
    x: torch.Tensor,
    labels: torch.Tensor,
    n_components: int,
    covariance_type: str,
    reg: torch.Tensor,
) -> MixtureParameters:
    """The M-step for one-hot responsibilities (used after k-means)."""
    responsibilities = torch.nn.functional.one_hot(labels, n_components).to(x.dtype)
    stats = _statistics(x, responsibilities, covariance_type)
    return _m_step(stats, x.shape[0], covariance_type, x.T @ x, reg)


@dataclass
class EMResult:
    """Outcome of :func:`expectation_maximization`."""

    params: MixtureParameters
    mean_log_likelihood: float
    n_iter: int
    converged: bool


def expectation_maximization(
    x: torch.Tensor,
    params: MixtureParameters,
    *,
    max_iter: int = 100,
    tol: float = 1e-3,
    reg: torch.Tensor | None = None,
    maximize: Callable[[Statistics, MixtureParameters], MixtureParameters] | None = None,
    log_prior: Callable[[MixtureParameters], float] | None = None,
) -> EMResult:
    """EM from ``params`` until the mean objective per row gains < ``tol``.

    The objective is the log-likelihood, plus ``log_prior`` when given (MAP-EM).

    Args:
        x: data of shape (N, D), same dtype and device as ``params``.
        params: starting mixture.
        max_iter: most EM iterations.
        tol: stop when the mean objective per row improves by less than this (nats).
        reg: (D,) added to covariance diagonals of the closed-form M-step, for safety.
        maximize: the M-step ``maximize(stats, start)``; ``start`` is the closed-form
            maximum-likelihood M-step. Default: that closed form.
        log_prior: log p(params), added to the objective (nats).

    Returns:
        the fitted parameters and the mean objective per row (at the last E-step's
        parameters).
    """
    n_rows, n_features = x.shape
    kind = params.covariance_type
    if reg is None:
        reg = torch.zeros(n_features, dtype=x.dtype, device=x.device)
    total_outer = x.T @ x
    n_components = params.locs.shape[0]
    width = _features(x[:1], kind).shape[1]
    size = max(1, _CHUNK_ELEMENTS // (n_components + width))
    # The features of every row as (F, N) columns (see batched_starts), once, when they fit
    # in a few chunks' worth of memory.
    cached = _features(x, kind).T.contiguous() if n_rows * width <= 8 * _CHUNK_ELEMENTS else None
    previous = -math.inf
    mean_ll = -math.inf
    converged = False
    iteration = 0
    for iteration in range(1, max_iter + 1):  # noqa: B007 (returned as n_iter)
        # One E-step: log w_k N(x_n | k) = features_n . W_k, one matrix product per chunk;
        # the moments are one more.
        natural = _natural_parameters(params)
        moments = x.new_zeros(width, n_components)
        total_ll = x.new_zeros(())
        for start in range(0, n_rows, size):
            if cached is None:
                features = _features(x[start : start + size], kind).T.contiguous()
            else:
                features = cached[:, start : start + size]
            joint = natural.T @ features  # (K, rows): see _normalise_columns
            total_ll += _normalise_columns(joint).sum()
            moments.addmm_(features, joint.T)
        stats = _unpack(moments.T, n_features, kind)
        mean_ll = total_ll.item() / n_rows
        if log_prior is not None:
            mean_ll += log_prior(params) / n_rows
        params = _m_step(stats, n_rows, kind, total_outer, reg)
        if maximize is not None:
            params = maximize((*stats, total_outer), params)
        if abs(mean_ll - previous) < tol:
            converged = True
            break
        previous = mean_ll
    return EMResult(params, mean_ll, iteration, converged)


def _stack(starts: list[MixtureParameters]) -> MixtureParameters:
    """S mixtures of K components as one of S * K (tied covariances repeated per component,
    as full ones); each start's weights still sum to one."""
    kind = starts[0].covariance_type
    k = starts[0].locs.shape[0]
    covariances = torch.stack([p.covariances for p in starts])
    if kind == "tied":
        covariances = covariances.repeat_interleave(k, 0)
        kind = "full"
    else:
        covariances = covariances.flatten(0, 1)
    return MixtureParameters(
        torch.cat([p.weights for p in starts]),
        torch.cat([p.locs for p in starts]),
        covariances,
        kind,
    )


def _stacked_m_step(
    moments: torch.Tensor, n_starts: int, covariance_type: str, reg: torch.Tensor
) -> list[MixtureParameters]:
    """The closed-form likelihood M-step of each start from stacked moments (S * K, F)."""
    n_features = reg.shape[0]
    wide = "full" if covariance_type == "tied" else covariance_type
    counts, sums, second = _unpack(moments, n_features, wide)
    counts = counts + 10 * torch.finfo(counts.dtype).eps
    locs = sums / counts[:, None]
    if wide == "full":
        scatter = second - counts[:, None, None] * locs[:, :, None] * locs[:, None, :]
        covariances = scatter / counts[:, None, None] + torch.diag(reg)
    else:
        covariances = second / counts[:, None] - locs.square() + reg
        if covariance_type == "spherical":
            covariances = covariances.mean(-1)
    counts = counts.reshape(n_starts, -1)
    weights = counts / counts.sum(-1, keepdim=True)
    locs = locs.reshape(n_starts, -1, n_features)
    covariances = covariances.reshape(n_starts, -1, *covariances.shape[1:])
    if covariance_type == "tied":
        scatter = scatter.reshape(n_starts, -1, n_features, n_features).sum(1)
        covariances = scatter / counts.sum(-1)[:, None, None] + torch.diag(reg)
    return [
        MixtureParameters(w, m, c, covariance_type)
        for w, m, c in zip(weights, locs, covariances, strict=True)
    ]


def _normalise_columns(joint: torch.Tensor) -> torch.Tensor:
    """Responsibilities in place from log joints (..., K, n) (components along dim -2, each
    row a contiguous column); returns each row's log normaliser (..., 1, n). The reductions
    run across the K contiguous rows of length n, which vectorises far better than a
    logsumexp over a short last dimension."""
    peak = joint.amax(-2, keepdim=True)
    total = joint.sub_(peak).exp_().sum(-2, keepdim=True)
    joint.div_(total)
    return total.log_().add_(peak)


def batched_starts(
    x: torch.Tensor,
    centres: torch.Tensor,
    covariance_type: str,
    *,
    kmeans_iterations: int,
    em_iterations: int,
    reg: torch.Tensor,
) -> tuple[list[MixtureParameters], torch.Tensor]:
    """Several starts at once: Lloyd k-means from each set of ``centres`` (S, K, D), the
    hard-assignment M-step, then ``em_iterations`` of likelihood EM, every step one matrix
    product over all S * K components (laid out as (S * K, rows), so that reductions over
    components run along contiguous rows).

    Returns:
        each start's mixture and its mean log-likelihood per row, shape (S,).
    """
    n_rows, n_features = x.shape
    n_starts, k, _ = centres.shape
    threshold = reg.new_tensor(0.0) if n_rows < 2 else 1e-4 * x.var(0).mean()
    wide = "full" if covariance_type == "tied" else covariance_type
    width = _features(x[:1], wide).shape[1]
    size = max(1, _CHUNK_ELEMENTS // (n_starts * k + width))
    offsets = (torch.arange(n_starts, device=x.device) * k)[:, None]
    # Rows as columns throughout: products with a contiguous (D, N) or (F, N) operand avoid
    # BLAS copying a transposed one on every call. A row of ones below them makes the
    # distances' |c|^2 term part of the product, not a broadcast added to its output.
    columns = torch.cat([x.T, x.new_ones(1, n_rows)])

    def nearest(centres: torch.Tensor) -> torch.Tensor:  # (S, N) labels
        flat = centres.reshape(-1, n_features)
        weights = torch.cat([-2 * flat, flat.square().sum(-1, keepdim=True)], 1)
        labels = [
            (weights @ columns[:, i : i + size])
            .reshape(n_starts, k, -1)
            .min(1)  # its indices: much faster than argmin across a middle dimension
            .indices
            for i in range(0, n_rows, size)
        ]
        return torch.cat(labels, 1)

    labels = _lloyd(columns, centres, nearest, kmeans_iterations, threshold)
    # The features as (F, rows) columns: computed once when they fit in a few chunks' worth
    # of memory, else per chunk on every pass.
    cached = _features(x, wide).T.contiguous() if n_rows * width <= 8 * _CHUNK_ELEMENTS else None

    def chunks():
        for i in range(0, n_rows, size):
            if cached is not None:
                yield i, cached[:, i : i + size]
            else:
                yield i, _features(x[i : i + size], wide).T.contiguous()

    moments = x.new_zeros(width, n_starts * k)  # transposed: (F, S * K)
    for i, chunk in chunks():
        index = labels[:, i : i + size] + offsets
        one_hot = x.new_zeros(n_starts * k, index.shape[1]).scatter_(0, index, 1.0)
        moments.addmm_(chunk, one_hot.T)
    starts = _stacked_m_step(moments.T, n_starts, covariance_type, reg)
    for iteration in range(em_iterations + 1):
        natural = _natural_parameters(_stack(starts))  # (F, S * K)
        moments = x.new_zeros(natural.shape)
        total = x.new_zeros(n_starts)
        for _, chunk in chunks():
            joint = (natural.T @ chunk).reshape(n_starts, k, -1)
            total += _normalise_columns(joint).sum((1, 2))
            if iteration < em_iterations:
                moments.addmm_(chunk, joint.reshape(n_starts * k, -1).T)
        if iteration < em_iterations:
            starts = _stacked_m_step(moments.T, n_starts, covariance_type, reg)
    return starts, total / n_rows


def _lloyd(
    columns: torch.Tensor,
    centres: torch.Tensor,
    nearest: Callable[[torch.Tensor], torch.Tensor],
    iterations: int,
    threshold: torch.Tensor,
) -> torch.Tensor:
    """Lloyd's k-means of S starts at once from ``centres`` (S, K, D) on ``columns`` (the
    rows as (D + 1, N) columns, a row of ones last), until no centre moves more than
    ``threshold`` (squared) or ``iterations`` pass; returns the labels (S, N)."""
    n_starts, k, n_features = centres.shape
    offsets = (torch.arange(n_starts, device=columns.device) * k)[:, None]
    labels = nearest(centres)
    for _ in range(iterations):
        # every start's counts and sums at once: a (S * K, N) one-hot matrix product
        one_hot = columns.new_zeros(n_starts * k, columns.shape[1])
        one_hot.scatter_(0, labels + offsets, 1.0)
        counts = one_hot.sum(1)
        sums = (columns[:-1] @ one_hot.T).T
        moved = torch.where(
            counts[:, None] > 0,
            sums / counts.clamp(min=1)[:, None],
            centres.reshape(-1, n_features),
        ).reshape(centres.shape)
        shift = (moved - centres).square().sum((1, 2))
        centres = moved
        labels = nearest(centres)
        if bool((shift <= threshold).all()):
            break
    return labels
