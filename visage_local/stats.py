"""How sure the numbers are: Wilson intervals for ASR, a bootstrap interval for VISAGE,
and basin edges.

80 prompts give an ASR with a 95% interval of about +-10 points. The paper
reports single numbers; visage-local reports each with its interval.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from visage_local import metrics

Z_95 = 1.959963984540054  # the standard normal's 97.5th percentile
BOOTSTRAP_RESAMPLES = 1000
EDGE_THRESHOLD = 20.0  # ASR points above the origin's that mark the basin's edge


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of a proportion, in percent."""
    if n <= 0 or not 0 <= successes <= n:
        raise ValueError("need 0 <= successes <= n and n > 0")
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return 100.0 * max(0.0, centre - half), 100.0 * min(1.0, centre + half)


def asr_interval(n_refused: int, n_prompts: int) -> tuple[float, float]:
    """95% Wilson interval of an ASR (the share not refused), in percent."""
    return wilson_interval(n_prompts - n_refused, n_prompts)


def bootstrap_distribution(
    refused: np.ndarray, dims: int, seed: int, resamples: int = BOOTSTRAP_RESAMPLES
) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """VISAGE of ``resamples`` landscapes made by resampling prompts with replacement, and
    the span each one averages over: (start, end) indices in 1D, (ring, ring) in 2D.

    ``refused[i, j]`` is whether prompt j was refused at point i, points in alpha order
    (1D) or row by row, beta then alpha (2D, a square grid). The same resampled prompts
    are used at every point of one resample, so each resample is a landscape of its own.
    """
    refused = np.asarray(refused, dtype=bool)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, refused.shape[1], size=(resamples, refused.shape[1]))
    asr = 100.0 * (1.0 - refused[:, picks].mean(axis=2))  # (points, resamples)
    values, spans = [], []
    for b in range(resamples):
        value, span = visage_and_span(asr[:, b], dims)
        values.append(value)
        spans.append(span)
    return np.array(values), spans


def visage_and_span(asr: np.ndarray, dims: int) -> tuple[float, tuple[int, int]]:
    """VISAGE of one landscape (points as ``bootstrap_distribution`` orders them) and the
    span it averages over."""
    if dims == 1:
        return metrics.visage_1d(asr.tolist()), metrics.visage_span_1d(asr.tolist())
    side = int(round(np.sqrt(len(asr))))
    square = np.reshape(asr, (side, side))
    ring = metrics.visage_rings_2d(square)
    return metrics.visage_2d(square), (ring, ring)


def percentile_interval(values: np.ndarray) -> tuple[float, float]:
    """The 95% percentile interval of bootstrap values."""
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


# A trimmed span that at least this share of the resamples average over is a mode of its own.
MODE_SHARE = 0.10


def visage_modes(values: np.ndarray, spans: list[tuple[int, int]]) -> list[dict] | None:
    """The bootstrap's modes when its resamples average over different trimmed spans, each
    taken by at least MODE_SHARE of them: per span its share, median VISAGE and 95%
    percentile interval, ordered by median. None when one span holds (nearly) all.

    Trimming is discrete: where one answer decides whether a broken point is kept in the
    span, the resamples that drop it average over another span, and the distribution has
    one mode per span; a single interval across them describes neither.
    """
    groups: dict[tuple[int, int], list[float]] = {}
    for value, span in zip(values.tolist(), spans, strict=True):
        groups.setdefault(span, []).append(value)
    kept = {span: v for span, v in groups.items() if len(v) >= MODE_SHARE * len(values)}
    if len(kept) < 2:
        return None
    modes = [
        {
            "span": list(span),
            "share": len(v) / len(values),
            "visage": float(np.median(v)),
            "visage_ci": list(percentile_interval(np.asarray(v))),
        }
        for span, v in kept.items()
    ]
    return sorted(modes, key=lambda m: m["visage"])


def bootstrap_across_directions(
    refused: Sequence[np.ndarray], dims: int, seed: int, resamples: int = BOOTSTRAP_RESAMPLES
) -> tuple[float, float]:
    """95% interval of the mean VISAGE over K directions, counting both sources of
    variation: each resample draws K directions with replacement and, independently, the
    prompts with replacement (the same prompts at every point of every drawn direction,
    since the directions share the prompt set), and averages those directions' VISAGE.

    ``refused[k]`` is direction k's verdict matrix, as ``bootstrap_distribution`` takes.
    """
    matrices = [np.asarray(r, dtype=bool) for r in refused]
    n_prompts = matrices[0].shape[1]
    if any(m.shape[1] != n_prompts for m in matrices):
        raise ValueError("the directions' verdicts cover different numbers of prompts")
    rng = np.random.default_rng(seed)
    chosen = rng.integers(0, len(matrices), size=(resamples, len(matrices)))
    picks = rng.integers(0, n_prompts, size=(resamples, n_prompts))
    per_direction = np.empty((len(matrices), resamples))
    for k, m in enumerate(matrices):
        asr = 100.0 * (1.0 - m[:, picks].mean(axis=2))
        per_direction[k] = [visage_and_span(asr[:, b], dims)[0] for b in range(resamples)]
    values = per_direction[chosen, np.arange(resamples)[:, None]].mean(axis=1)
    return percentile_interval(values)


def rank_intervals(intervals: Sequence[Sequence[float]]) -> list[tuple[int, int]]:
    """For each value's interval (higher is better), the ranks it could take: best, one more
    than the number of values certainly above it (their low end above its high end);
    worst, the count less those certainly below it. Values whose intervals overlap share
    ranks instead of being put in a strict order."""
    n = len(intervals)
    ranks = []
    for low, high in intervals:
        above = sum(1 for other_low, _ in intervals if other_low > high)
        below = sum(1 for _, other_high in intervals if other_high < low)
        ranks.append((1 + above, n - below))
    return ranks


def rank_text(rank: tuple[int, int]) -> str:
    """``3`` for a certain rank, ``1-3`` for a rank interval."""
    best, worst = rank
    return str(best) if best == worst else f"{best}-{worst}"


def basin_edges(
    alphas: Sequence[float],
    asr: Sequence[float],
    origin_asr: float,
    threshold: float = EDGE_THRESHOLD,
) -> tuple[float | None, float | None]:
    """The first alpha on each side of the origin where ASR exceeds ``origin_asr + threshold``,
    linearly interpolated between grid points; None on a side where it never does."""
    order = np.argsort(alphas)
    x = np.asarray(alphas, dtype=float)[order]
    y = np.asarray(asr, dtype=float)[order]
    level = origin_asr + threshold
    origin = int(np.argmin(np.abs(x)))

    def walk(indices) -> float | None:
        previous = origin
        for i in indices:
            if y[i] > level:
                x0, y0, x1, y1 = x[previous], y[previous], x[i], y[i]
                return float(x0 + (level - y0) * (x1 - x0) / (y1 - y0)) if y1 != y0 else float(x1)
            previous = i
        return None

    return walk(range(origin - 1, -1, -1)), walk(range(origin + 1, len(x)))


# Student's t 97.5th percentiles for 1..30 degrees of freedom (beyond 30: the normal's).
_T_975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def mean_interval(values: Sequence[float]) -> tuple[float, float, float] | None:
    """Mean and 95% t interval of a few values (e.g. VISAGE over random directions);
    None for no values; the interval is the mean itself for one value."""
    if not values:
        return None
    x = np.asarray(values, dtype=float)
    mean = float(x.mean())
    if len(x) == 1:
        return mean, mean, mean
    df = len(x) - 1
    t = _T_975[df - 1] if df <= len(_T_975) else Z_95
    half = t * float(x.std(ddof=1)) / math.sqrt(len(x))
    return mean, mean - half, mean + half


def bootstrap_mean(
    values: Sequence[float], seed: int, resamples: int = BOOTSTRAP_RESAMPLES
) -> tuple[float, float, float]:
    """Mean of ``values`` (one per prompt) and the 95% percentile interval of the mean over
    resamples of them with replacement, seeded."""
    x = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(resamples, len(x)))].mean(axis=1)
    low, high = percentile_interval(means)
    return float(x.mean()), low, high


def ray_edge(radii: Sequence[float], asr: Sequence[float], origin_asr: float) -> float | None:
    """The basin edge along one ray: the first radius where ASR exceeds the origin's by
    EDGE_THRESHOLD, interpolated; None when it never does."""
    return basin_edges([0.0, *radii], [origin_asr, *asr], origin_asr)[1]


def average_ranks(values: Sequence[float]) -> np.ndarray:
    """Ranks from 1, tied values sharing the mean of the ranks they span."""
    x = np.asarray(values, dtype=float)
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(1, len(x) + 1)
    for value in np.unique(x):
        tied = x == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def spearman_rho(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rank correlation (Pearson's over average ranks, so ties count as
    ties); None when either side has no spread."""
    rx, ry = average_ranks(x), average_ranks(y)
    if len(rx) != len(ry):
        raise ValueError("x and y differ in length")
    if len(rx) < 2 or rx.std() == 0 or ry.std() == 0:
        return None
    return float(np.corrcoef(rx, ry)[0, 1])
