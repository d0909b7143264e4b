"""Intervals and basin edges against independent computations."""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pytest
from scipy.stats import binomtest, spearmanr

from visage_local import metrics
from visage_local.analysis.landscape import fragility, landscape_figures
from visage_local.points.grid import Grid
from visage_local.record import PointRow
from visage_local.stats import (
    asr_interval,
    basin_edges,
    bootstrap_across_directions,
    bootstrap_distribution,
    mean_interval,
    percentile_interval,
    rank_intervals,
    spearman_rho,
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


def bootstrap_visage(refused: np.ndarray, dims: int, seed: int) -> tuple[float, float]:
    """The 95% percentile interval of VISAGE over the bootstrap's resamples of prompts."""
    return percentile_interval(bootstrap_distribution(refused, dims, seed)[0])


def test_the_bootstrap_of_visage_is_seeded_and_brackets_the_estimate():
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


def _exact_two_level(refused: list[np.ndarray]) -> np.ndarray:
    """Every equally likely resample of the two-level bootstrap, by brute force: each
    ordered draw of K directions with replacement, with each ordered draw of the prompts
    with replacement; VISAGE computed point by point with plain loops."""
    k, (n_points, n_prompts) = len(refused), refused[0].shape
    values = []
    for directions in itertools.product(range(k), repeat=k):
        for prompts in itertools.product(range(n_prompts), repeat=n_prompts):
            each = []
            for d in directions:
                asr = [
                    100.0 * sum(not refused[d][i][j] for j in prompts) / n_prompts
                    for i in range(n_points)
                ]
                each.append(metrics.visage_1d(asr))
            values.append(sum(each) / k)
    return np.array(values)


def test_two_level_interval_matches_the_exact_bootstrap_distribution():
    # two directions that differ (a wide basin and a narrow one) and prompts that differ
    # (some always refused, one never): both sources of variation matter
    wide = np.array([[0, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 0, 0], [1, 0, 0, 0]], bool)
    narrow = np.array([[0, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]], bool)
    exact = _exact_two_level([wide, narrow])
    low, high = bootstrap_across_directions([wide, narrow], 1, seed=5, resamples=20000)
    # 20000 resamples put the 2.5th percentile within about 0.1 points of the exact one
    assert np.percentile(exact, 1.5) <= low <= np.percentile(exact, 3.5)
    assert np.percentile(exact, 96.5) <= high <= np.percentile(exact, 98.5)
    assert (low, high) == bootstrap_across_directions([wide, narrow], 1, seed=5, resamples=20000)


def _rows(refusals: list[int], n_prompts: int) -> list[PointRow]:
    alphas = np.linspace(-0.5, 0.5, len(refusals)).round(6).tolist()
    return [
        PointRow(a, None, 100.0 * (n_prompts - k) / n_prompts, [0.0, 100.0], k, n_prompts)
        for a, k in zip(alphas, refusals, strict=True)
    ]


def _records(refusals: list[int], n_prompts: int) -> list[list[dict]]:
    return [[{"refused": j < k, "set": "harmful"} for j in range(n_prompts)] for k in refusals]


# refusals of 10 prompts at 11 points: broken ends, and at +0.4 a single refusal (a stray
# keyword in token salad) that keeps the broken +0.3 inside VISAGE's span
ONE_ANSWER = [0, 0, 4, 6, 7, 8, 7, 6, 0, 1, 0]


def test_fragility_flags_a_span_one_answer_keeps_and_gives_visage_without_it():
    rows = _rows(ONE_ANSWER, 10)
    fragile = fragility(rows, 1)
    assert fragile is not None
    assert fragile["points"] == [{"alpha": 0.4, "beta": None, "n_refused": 1}]
    assert fragile["span"] == [-0.3, 0.2]
    assert fragile["visage"] == pytest.approx(np.mean([40, 60, 70, 80, 70, 60]))
    assert metrics.visage_1d([r.asr for r in rows]) == pytest.approx(
        np.mean([40, 60, 70, 80, 70, 60, 0, 10])
    )
    # five refusals at +0.4 are not a few answers: the span stands
    assert fragility(_rows([0, 0, 4, 6, 7, 8, 7, 6, 0, 5, 0], 10), 1) is None
    # nor does a landscape without broken ends move
    assert fragility(_rows([3, 4, 4, 6, 7, 8, 7, 6, 5, 5, 3], 10), 1) is None


def test_a_bootstrap_split_between_trimmed_spans_is_reported_as_two_modes():
    figures = landscape_figures(
        _rows(ONE_ANSWER, 10), _records(ONE_ANSWER, 10), Grid(1, 10, 0.5), seed=123
    )
    modes = figures["visage_modes"]
    assert modes is not None and [m["span"] for m in modes] == [[-0.3, 0.4], [-0.3, 0.2]]
    # resamples keep the single refusal with probability 1 - 0.9^10 = 0.65
    assert modes[0]["share"] == pytest.approx(1 - 0.9**10, abs=0.05)
    assert modes[0]["visage_ci"][1] < modes[1]["visage_ci"][1]
    steady = [0, 0, 4, 6, 7, 8, 7, 6, 5, 5, 0]
    figures = landscape_figures(_rows(steady, 10), _records(steady, 10), Grid(1, 10, 0.5), 123)
    assert figures["visage_modes"] is None and figures["visage_fragile"] is None


def test_rank_intervals_tie_overlapping_values_and_order_separate_ones():
    # higher is better: the first two overlap, the third is below both, the fourth above all
    ranks = rank_intervals([(50, 60), (55, 70), (10, 20), (80, 90)])
    assert ranks == [(2, 3), (2, 3), (4, 4), (1, 1)]
    assert rank_intervals([(1, 2), (3, 4), (5, 6)]) == [(3, 3), (2, 2), (1, 1)]
    assert rank_intervals([(0, 100), (1, 2), (3, 4)]) == [(1, 3), (2, 3), (1, 2)]


def test_compare_gives_overlapping_runs_shared_places():
    from visage_local.reading.compare import RunRow, with_ranks

    def row(run, visage, ci):
        return RunRow(run, "m", visage, ci, None, 20.0, None, None, 80, "advbench", "keyword",
                      123, "default", "none", None, None, None, "none")  # fmt: skip

    rows = with_ranks([row("a", 40.0, [30.0, 50.0]), row("i", None, None),
                       row("b", 45.0, [38.0, 52.0]), row("c", 70.0, [62.0, 78.0])])  # fmt: skip
    assert [r.rank for r in rows] == [[2, 3], None, [2, 3], [1, 1]]


def test_breaking_distance_is_breaking_t_times_the_finetunes_own_distance():
    from visage_local.points.grid import InterpolationGrid

    grid = InterpolationGrid(1, 4)  # t = 0, 0.25, ..., 1
    asr, n = [20.0, 20.0, 30.0, 60.0, 90.0], 10
    moved = {"all": {"distance": 0.08}, "mlp": {"distance": 0.1}, "attention": {"distance": 0.05}}
    rows = [
        PointRow(t, None, a, [0.0, 100.0], round(n * (100 - a) / 100), n,
                 displacement=None if t == 0 else {k: {"distance": v["distance"] * t}
                                                   for k, v in moved.items()})
        for t, a in zip(grid.alpha_axis(), asr, strict=True)
    ]  # fmt: skip
    figures = landscape_figures(rows, [[] for _ in rows], grid, seed=1, by_category=False)
    t = figures["breaking_t"]
    assert t == pytest.approx(0.5 + 0.25 * (40 - 30) / (60 - 30))
    assert figures["breaking_distance"] == pytest.approx(
        {k: t * v["distance"] for k, v in moved.items()}
    )
    rows[3:] = [replace(r, asr=25.0) for r in rows[3:]]  # never leaves: no distance
    assert landscape_figures(rows, [[] for _ in rows], grid, 1, False)["breaking_distance"] is None


def test_spearman_matches_scipy_with_and_without_ties():
    rng = np.random.default_rng(5)
    for n in (3, 5, 9):
        for _ in range(10):
            x, y = rng.permutation(n), rng.integers(0, 4, n)  # y has ties
            for a, b in ((x, rng.permutation(n)), (x, y)):
                if len(set(b)) > 1:
                    assert spearman_rho(a, b) == pytest.approx(spearmanr(a, b).statistic)
    # ties share the mean rank: ranks (1, 2.5, 2.5, 4) against (1, 3, 2, 4), worked by hand
    assert spearman_rho([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(np.sqrt(0.9))
    assert spearman_rho([1, 2, 3], [5, 5, 5]) is None  # no spread: undefined
