"""How close a model's samples are to data, without a likelihood: two-sample tests and mode
coverage. They take samples from any family (a GAN, whose density is unknown, or any other)
and say what they measure.

* :func:`mmd_test`: kernel maximum mean discrepancy with a Gaussian kernel (Gretton et al.,
  JMLR 2012), its unbiased estimate and a permutation p-value.
* :func:`nearest_neighbour_test`: a classifier two-sample test (Lopez-Paz & Oquab, ICLR
  2017) with the leave-one-out 1-nearest-neighbour classifier, whose accuracy is 1/2 when
  the two sets come from one distribution; a permutation p-value.
* :func:`frechet_distance`: the Fréchet (2-Wasserstein) distance between Gaussians fitted
  to two sets of features (Heusel et al. 2017 use Inception features, "FID"; pyrogen
  computes it in the features of a classifier it trains on the data,
  :mod:`pyrogen.diagnostics.feature_classifier`, which is *not* the Inception FID).
* :func:`mode_coverage`: for data from a mixture with known modes (the ring of 8 and the
  grid of 25 Gaussians of the unrolled-GAN and VEEGAN papers, :func:`ring_of_gaussians`,
  :func:`grid_of_gaussians`): how many modes the samples reach and what share of them is
  near a mode.

Permutation p-values are ``(1 + #{permuted >= observed}) / (1 + permutations)``: valid at
any sample size (never 0), with a resolution of ``1 / (1 + permutations)``.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch

from pyrogen.checks import as_tensor, check_int

__all__ = [
    "ModeCoverage",
    "TwoSampleTest",
    "frechet_distance",
    "grid_of_gaussians",
    "mmd_test",
    "mode_coverage",
    "nearest_neighbour_test",
    "ring_of_gaussians",
]


class TwoSampleTest(NamedTuple):
    """The result of a two-sample test: its ``statistic``, the permutation ``p_value`` of
    "both sets come from one distribution", and the test's ``name`` (what it measures)."""

    statistic: float
    p_value: float
    name: str


def _pair(x: Any, y: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """The two sets as float64 rows (N, D), (M, D) with the same D."""
    x = as_tensor(x, name="x", ndim=None, dtype=torch.float64)
    y = as_tensor(y, name="y", ndim=None, dtype=torch.float64)
    if x.dim() < 2 or y.dim() < 2:
        raise ValueError(
            f"x, y: expected rows (N, ...) and (M, ...), got shapes {tuple(x.shape)} and "
            f"{tuple(y.shape)}"
        )
    x, y = x.flatten(1), y.flatten(1)
    if x.shape[1] != y.shape[1] or len(x) < 2 or len(y) < 2:
        raise ValueError(
            f"x, y: expected at least 2 rows each of the same size, got shapes "
            f"{tuple(x.shape)} and {tuple(y.shape)}"
        )
    return x, y


def _permutation_p_value(observed: float, permuted: torch.Tensor) -> float:
    return float((1 + (permuted >= observed - 1e-12).sum()) / (1 + permuted.numel()))


def mmd_test(
    x: Any, y: Any, *, bandwidth: float | None = None, permutations: int = 200, seed: int = 0
) -> TwoSampleTest:
    """Kernel two-sample test: the unbiased MMD^2 between rows x (N, ...) and y (M, ...)
    with the Gaussian kernel exp(-||a - b||^2 / (2 h^2)), and its permutation p-value.

    Args:
        x, y: the two sets (e.g. samples and held-out data); rows are flattened.
        bandwidth: h; default the median distance between rows of both sets (the median
            heuristic).
        permutations: random relabellings of the pooled rows for the p-value.
        seed: seeds the permutations.

    Returns:
        :class:`TwoSampleTest` with ``statistic`` MMD^2 (unbiased: about 0, possibly
        negative, when the distributions are equal).

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> a, b, c = (torch.randn(100, 2, generator=g) for _ in range(3))
        >>> same, shifted = mmd_test(a, b), mmd_test(a, c + 1)
        >>> same.p_value > 0.05, shifted.p_value < 0.01
        (True, True)
    """
    x, y = _pair(x, y)
    check_int("permutations", permutations, minimum=1)
    pooled = torch.cat([x, y])
    distances = torch.cdist(pooled, pooled).square()
    if bandwidth is None:
        off_diagonal = distances[~torch.eye(len(pooled), dtype=torch.bool)]
        bandwidth = float(off_diagonal.median().sqrt()) or 1.0
    elif not (isinstance(bandwidth, int | float) and 0 < bandwidth < math.inf):
        raise ValueError(f"bandwidth: expected a positive number, got {bandwidth!r}")
    kernel = torch.exp(-distances / (2 * bandwidth**2))
    n, total = len(x), len(pooled)
    generator = torch.Generator().manual_seed(seed)
    # Row 0 is the observed split (x first); then the random relabellings, all at once.
    members = torch.zeros(permutations + 1, total, dtype=torch.float64)
    members[0, :n] = 1.0
    for row in range(1, permutations + 1):
        members[row, torch.randperm(total, generator=generator)[:n]] = 1.0
    statistics = _mmd2(kernel, members)
    observed = float(statistics[0])
    name = f"MMD^2, Gaussian kernel, bandwidth {bandwidth:.4g}"
    return TwoSampleTest(observed, _permutation_p_value(observed, statistics[1:]), name)


def _mmd2(kernel: torch.Tensor, members: torch.Tensor) -> torch.Tensor:
    """Unbiased MMD^2 of each split of the pooled rows, (P,): ``members`` (P, R) marks the
    first set with 1 and the second with 0; sums of the kernel's blocks by matrix products."""
    other = 1.0 - members
    diagonal = kernel.diagonal()
    k_first, k_other = kernel @ members.T, kernel @ other.T  # (R, P)
    within_first = (members.T * k_first).sum(0) - members @ diagonal
    within_other = (other.T * k_other).sum(0) - other @ diagonal
    between = (other.T * k_first).sum(0)
    n, m = members.sum(1), other.sum(1)
    return within_first / (n * (n - 1)) + within_other / (m * (m - 1)) - 2 * between / (n * m)


def nearest_neighbour_test(
    x: Any, y: Any, *, permutations: int = 1000, seed: int = 0
) -> TwoSampleTest:
    """Classifier two-sample test with the leave-one-out 1-nearest-neighbour classifier:
    each pooled row is labelled by the set of its nearest other row; the ``statistic`` is
    that classifier's accuracy (about 1/2 for one distribution, 1 for separated ones).

    The nearest neighbours do not depend on the labels, so a permutation reuses them: the
    p-value costs one distance matrix.

    Args:
        x, y: the two sets, rows flattened; equal sizes make 1/2 the chance level.
        permutations: random relabellings for the p-value.
        seed: seeds the permutations.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> a, b = torch.randn(50, 2, generator=g), torch.randn(50, 2, generator=g)
        >>> far = nearest_neighbour_test(a, b + 5)
        >>> far.statistic, far.p_value < 0.01
        (1.0, True)
    """
    x, y = _pair(x, y)
    check_int("permutations", permutations, minimum=1)
    pooled = torch.cat([x, y])
    distances = torch.cdist(pooled, pooled)
    distances.fill_diagonal_(math.inf)
    nearest = distances.argmin(1)
    labels = torch.cat([torch.zeros(len(x)), torch.ones(len(y))])
    observed = float((labels == labels[nearest]).double().mean())
    generator = torch.Generator().manual_seed(seed)
    permuted = torch.empty(permutations, dtype=torch.float64)
    for index in range(permutations):
        shuffled = labels[torch.randperm(len(labels), generator=generator)]
        permuted[index] = (shuffled == shuffled[nearest]).double().mean()
    name = "leave-one-out 1-nearest-neighbour accuracy (1/2: indistinguishable)"
    return TwoSampleTest(observed, _permutation_p_value(observed, permuted), name)


def frechet_distance(features_a: Any, features_b: Any) -> float:
    """The Fréchet distance between Gaussians fitted to two sets of features,
    ``|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a^(1/2) S_b S_a^(1/2))^(1/2))`` (the squared
    2-Wasserstein distance between N(mu_a, S_a) and N(mu_b, S_b); S the unbiased sample
    covariances), in float64.

    The matrix square roots are taken by symmetric eigendecompositions (eigenvalues that
    rounding makes slightly negative are set to 0), so the result is real, symmetric in
    the two sets and 0 for identical sets.

    Args:
        features_a, features_b: rows (N, F) and (M, F), e.g. a classifier's features of
            samples and of data; N, M >= 2.

    Returns:
        the distance (>= 0), in squared feature units.

    Example:
        >>> a = torch.randn(500, 3, generator=torch.Generator().manual_seed(0))
        >>> round(frechet_distance(a, a), 6), round(frechet_distance(a, a + 1.0), 6)  # shift: 3
        (0.0, 3.0)
    """
    a, b = _pair(features_a, features_b)
    difference = (a.mean(0) - b.mean(0)).square().sum()
    cov_a, cov_b = torch.cov(a.T).reshape(a.shape[1], -1), torch.cov(b.T).reshape(b.shape[1], -1)
    root_a = _psd_power(cov_a, 0.5)
    cross = _psd_power(root_a @ cov_b @ root_a, 0.5).trace()
    distance = difference + cov_a.trace() + cov_b.trace() - 2 * cross
    return max(float(distance), 0.0)


def _psd_power(matrix: torch.Tensor, power: float) -> torch.Tensor:
    """A symmetric positive semi-definite matrix to a power, by eigendecomposition."""
    values, vectors = torch.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * values.clamp(min=0) ** power) @ vectors.T


class ModeCoverage(NamedTuple):
    """What :func:`mode_coverage` found: ``modes`` reached (with at least ``min_count``
    high-quality samples) of ``total`` modes, the ``high_quality`` share of samples within
    ``threshold`` standard deviations of their nearest mode, and ``counts`` of high-quality
    samples per mode (K,)."""

    modes: int
    total: int
    high_quality: float
    counts: torch.Tensor


def mode_coverage(
    samples: Any, centers: Any, sd: float, *, threshold: float = 3.0, min_count: int = 1
) -> ModeCoverage:
    """Modes reached and the share of samples near a mode, for data from a mixture of
    Gaussians with known ``centers`` (K, D) and standard deviation ``sd`` (the measure of
    the unrolled-GAN and VEEGAN papers: a sample is of high quality within 3 sd of a mode;
    in D dimensions exact samples reach the share P(chi_D <= 3), 0.989 for D = 2).

    Example:
        >>> x, centers, sd = ring_of_gaussians(800, seed=0)
        >>> found = mode_coverage(x, centers, sd)
        >>> found.modes, found.total, round(found.high_quality, 2)  # 2-D: 1 - exp(-4.5)
        (8, 8, 0.99)
    """
    samples = as_tensor(samples, name="samples", ndim=2, dtype=torch.float64)
    centers = as_tensor(centers, name="centers", ndim=2, dtype=torch.float64)
    if samples.shape[1] != centers.shape[1]:
        raise ValueError(
            f"samples, centers: expected the same D, got {samples.shape[1]} and {centers.shape[1]}"
        )
    if not (isinstance(sd, int | float) and 0 < sd < math.inf):
        raise ValueError(f"sd: expected a positive number, got {sd!r}")
    distance, nearest = torch.cdist(samples, centers).min(1)
    good = distance <= threshold * sd
    counts = torch.bincount(nearest[good], minlength=len(centers))
    modes = int((counts >= check_int("min_count", min_count, minimum=1)).sum())
    return ModeCoverage(modes, len(centers), float(good.double().mean()), counts)


def ring_of_gaussians(
    n: int, modes: int = 8, radius: float = 2.0, sd: float = 0.02, *, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """n rows (n, 2) from ``modes`` equal Gaussians on a circle; returns (rows, centers
    (modes, 2), sd)."""
    angles = torch.arange(modes, dtype=torch.float64) * (2 * math.pi / modes)
    centers = radius * torch.stack([angles.cos(), angles.sin()], 1)
    return _mixture_rows(n, centers, sd, seed)


def grid_of_gaussians(
    n: int, side: int = 5, spacing: float = 2.0, sd: float = 0.05, *, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """n rows (n, 2) from side x side equal Gaussians on a grid centred at 0; returns
    (rows, centers (side^2, 2), sd)."""
    ticks = (torch.arange(side, dtype=torch.float64) - (side - 1) / 2) * spacing
    centers = torch.cartesian_prod(ticks, ticks)
    return _mixture_rows(n, centers, sd, seed)


def _mixture_rows(
    n: int, centers: torch.Tensor, sd: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor, float]:
    generator = torch.Generator().manual_seed(seed)
    check_int("n", n, minimum=1)
    index = torch.randint(len(centers), (n,), generator=generator)
    rows = centers[index] + sd * torch.randn(n, 2, generator=generator, dtype=torch.float64)
    return rows.float(), centers.float(), sd
