"""Two-sample tests and mode coverage: against hand computations, their false-positive rate
under the null, their power on separated sets, and their input checks."""

from __future__ import annotations

import math

import pytest
import torch

from pyrogen.diagnostics.sample_tests import (
    grid_of_gaussians,
    mmd_test,
    mode_coverage,
    nearest_neighbour_test,
    ring_of_gaussians,
)


def _normal(n: int, seed: int, shift: float = 0.0) -> torch.Tensor:
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed)) + shift


def test_mmd_is_the_unbiased_estimate_written_out():
    x, y, h = _normal(5, 0).double(), _normal(4, 1, 0.5).double(), 0.7

    def k(a, b):
        return math.exp(-float((a - b).square().sum()) / (2 * h * h))

    xx = sum(k(x[i], x[j]) for i in range(5) for j in range(5) if i != j) / 20
    yy = sum(k(y[i], y[j]) for i in range(4) for j in range(4) if i != j) / 12
    xy = sum(k(x[i], y[j]) for i in range(5) for j in range(4)) / 20
    assert mmd_test(x, y, bandwidth=h, permutations=5).statistic == pytest.approx(
        xx + yy - 2 * xy, rel=1e-9
    )


@pytest.mark.parametrize("test", [mmd_test, nearest_neighbour_test])
def test_false_positives_under_the_null_stay_near_the_level(test):
    """40 pairs from one distribution: at level 0.05 about 2 rejections; more than 7 has
    probability below 0.5% (binomial)."""
    p_values = [test(_normal(40, 2 * s), _normal(40, 2 * s + 1), permutations=99).p_value
                for s in range(40)]  # fmt: skip
    assert sum(p < 0.05 for p in p_values) <= 7
    assert all(0 < p <= 1 for p in p_values)


def test_both_tests_find_a_shift_and_their_statistics_say_how_far():
    x, y = _normal(60, 0), _normal(60, 1, 1.5)
    mmd, nearest = mmd_test(x, y), nearest_neighbour_test(x, y)
    assert mmd.p_value == pytest.approx(1 / 201) and mmd.statistic > 0.1
    assert nearest.p_value < 0.01 and nearest.statistic > 0.65  # 1.5 sd apart: ~0.74
    same = nearest_neighbour_test(x, _normal(60, 2))
    assert abs(same.statistic - 0.5) < 0.15  # 120 neighbours: sd of the chance level ~0.05


def test_mode_coverage_counts_reached_modes_and_near_samples():
    x, centers, sd = ring_of_gaussians(400, seed=1)
    assert mode_coverage(x, centers, sd).modes == 8
    nearest = torch.cdist(x, centers).argmin(1)
    three = x[nearest < 3]
    found = mode_coverage(three, centers, sd)
    assert (found.modes, found.total) == (3, 8)
    assert found.counts[3:].sum() == 0 and found.counts[:3].sum() == len(three) * found.high_quality
    between = (centers[0] + centers[1]) / 2  # no sample near a mode
    assert mode_coverage(between.expand(10, 2), centers, sd).high_quality == 0.0
    grid, grid_centers, grid_sd = grid_of_gaussians(2000, seed=2)
    assert mode_coverage(grid, grid_centers, grid_sd, min_count=20).modes == 25


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: mmd_test(torch.zeros(5, 2), torch.zeros(5, 3)), "same size"),
        (lambda: mmd_test(torch.zeros(5), torch.zeros(5)), r"expected rows \(N, ...\)"),
        (lambda: mmd_test(_normal(5, 0), _normal(5, 1), bandwidth=-1.0), "bandwidth"),
        (lambda: nearest_neighbour_test(_normal(5, 0), _normal(1, 1)), "at least 2 rows"),
        (lambda: mode_coverage(torch.zeros(3, 2), torch.zeros(2, 3), 0.1), "the same D"),
        (lambda: mode_coverage(torch.zeros(3, 2), torch.zeros(2, 2), 0.0), "sd: expected"),
    ],
)
def test_bad_input_is_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()
