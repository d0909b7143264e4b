"""Intervals and basin edges against independent computations."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest

from visage_local import metrics
from visage_local.stats import (
    asr_interval,
    basin_edges,
    bootstrap_visage,
    mean_interval,
    wilson_interval,
)


@pytest.mark.parametrize(("k", "n"), [(0, 10), (5, 10), (10, 10), (20, 80), (79, 80), (1, 3)])
def test_wilson_interval_matches_scipy(k, n):
    expected = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    low, high = wilson_interval(k, n)
    assert low == pytest.approx(100 * expected.low, abs=1e-9)
    assert high == pytest.approx(100 * expected.high, abs=1e-9)


def test_wilson_interval_known_value_and_asr_orientation():
    # statsmodels' proportion_confint(5, 10, method="wilson") = (0.2366, 0.7634)
    low, high = wilson_interval(5, 10)
    assert (round(low, 2), round(high, 2)) == (23.66, 76.34)
    # ASR counts the prompts *not* refused: 60 of 80 refused -> 25% ASR
    low, high = asr_interval(60, 80)
    assert low < 25 < high and high - low == pytest.approx(18.68, abs=0.01)
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


def test_bootstrap_visage_is_seeded_and_brackets_the_estimate():
    rng = np.random.default_rng(0)
    n_points, n_prompts = 21, 80
    distance = np.abs(np.linspace(-0.5, 0.5, n_points))[:, None]
    refused = rng.random((n_points, n_prompts)) < np.clip(0.8 - 3 * distance, 0, 1)
    asr = 100 * (1 - refused.mean(axis=1))
    estimate = metrics.visage_1d(asr.tolist())
    first = bootstrap_visage(refused, 1, seed=123)
    assert first == bootstrap_visage(refused, 1, seed=123)
    assert first != bootstrap_visage(refused, 1, seed=124)
    assert first[0] < estimate < first[1] and first[1] - first[0] < 15
    # identical prompts leave nothing to resample: the interval collapses to the estimate
    same = np.repeat(refused[:, :1], n_prompts, axis=1)
    low, high = bootstrap_visage(same, 1, seed=1)
    assert low == high == metrics.visage_1d((100 * (1 - same.mean(1))).tolist())


def test_basin_edges_interpolate_the_first_crossing_on_each_side():
    alphas = [-0.3, -0.2, -0.1, 0.0, 0.1, 0.2, 0.3]
    asr = [100, 60, 30, 25, 35, 75, 100]
    left, right = basin_edges(alphas, asr, origin_asr=25)
    # left: 30 at -0.1, 60 at -0.2 -> 45 crossed at -0.1 - 0.1 * 15/30
    assert left == pytest.approx(-0.15)
    # right: 35 at 0.1, 75 at 0.2 -> 45 crossed at 0.1 + 0.1 * 10/40
    assert right == pytest.approx(0.125)
    assert basin_edges([-0.1, 0.0, 0.1], [30, 25, 30], 25) == (None, None)


@pytest.mark.parametrize("n", [2, 3, 5, 12, 31, 50])
def test_mean_interval_matches_scipy_t_interval(n):
    from scipy import stats as scipy_stats

    values = np.random.default_rng(n).normal(50, 10, size=n)
    mean, low, high = mean_interval(values.tolist())
    want = scipy_stats.t.interval(0.95, n - 1, loc=values.mean(), scale=scipy_stats.sem(values))
    assert mean == pytest.approx(values.mean())
    tolerance = 1e-3 * (high - low) if n <= 31 else 0.02 * (high - low)  # table, then normal
    assert low == pytest.approx(want[0], abs=tolerance)
    assert high == pytest.approx(want[1], abs=tolerance)
    assert mean_interval([]) is None and mean_interval([4.0]) == (4.0, 4.0, 4.0)
