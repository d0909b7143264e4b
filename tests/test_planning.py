"""Point orders: full grid, coarse-to-fine, and the adaptive edge search, on known landscapes."""

from __future__ import annotations

import pytest

from visage_local.analysis.landscape import basin_outline
from visage_local.points.grid import Grid, InterpolationGrid
from visage_local.points.planning import (
    AdaptiveEdges,
    FullGrid,
    Shard,
    coarse_to_fine,
    origin_index,
    plan,
)
from visage_local.stats import basin_edges
from visage_local.weights.perturb import Point


def _run(order, points, landscape):
    """Evaluate points in the order's choice against a known ASR function."""
    asr: dict[int, float] = {}
    while (i := order.next_point(points, asr)) is not None:
        assert i not in asr
        asr[i] = landscape(points[i].alpha)
    return asr


def test_full_grid_visits_every_point_once_origin_first():
    points = plan(Grid(1, 20, 0.5))
    asr = _run(FullGrid(), points, lambda a: 0.0)
    assert len(asr) == 21 and next(iter(asr)) == origin_index(points)


def test_shards_split_the_points_evenly_and_each_runs_the_origin_first():
    """N shards: each the origin, then every N-th other point; together every point once."""
    for points in (plan(Grid(1, 20, 0.5)), plan(Grid(2, 4, 0.5))):
        origin = origin_index(points)
        for n in (2, 3, 5):
            shards = [Shard(i, n) for i in range(1, n + 1)]
            visits = [list(_run(shard, points, lambda a: 0.0)) for shard in shards]
            assert all(visit[0] == origin for visit in visits)
            others = sorted(i for visit in visits for i in visit[1:])
            assert others == [i for i in range(len(points)) if i != origin]
            sizes = [len(visit) for visit in visits]
            assert max(sizes) - min(sizes) <= 1
    points = plan(Grid(1, 4, 0.5))  # -0.5, -0.25, 0, 0.25, 0.5
    assert [points[i].alpha for i in _run(Shard(2, 2), points, lambda a: 0.0)] == [0.0, -0.25, 0.5]
    for index, count in ((0, 2), (3, 2), (1, 1)):
        with pytest.raises(ValueError):
            Shard(index, count)


def test_coarse_first_alternates_sides_so_any_prefix_covers_the_axis_evenly():
    points = plan(Grid(1, 20, 0.5))
    coarse = FullGrid(coarse_first=True).order(points)
    assert [points[i].alpha for i in coarse] == [
        0.0, -0.5, 0.5, -0.25, 0.25, -0.1, 0.1, -0.2, 0.2, -0.3, 0.3, -0.4, 0.4,
        -0.05, 0.05, -0.15, 0.15, -0.35, 0.35, -0.45, 0.45,
    ]  # fmt: skip
    # an interpolation axis: two steps before t = 0, twelve after; each side coarse to fine
    t_points = [Point(t) for t in InterpolationGrid(1, 10, extra=2).alpha_axis()]
    t_order = [t_points[i].alpha for i in FullGrid(coarse_first=True).order(t_points)]
    assert t_order == [0.0, -0.2, 1.2, -0.1, 0.6, 0.3, 0.9, 0.1, 0.2, 0.4, 0.5, 0.7, 0.8, 1.0, 1.1]


def test_coarse_first_in_2d_completes_nested_grids_level_by_level():
    points = plan(Grid(2, 8, 0.4))
    order = FullGrid(coarse_first=True).order(points)
    assert sorted(order) == list(range(81)) and order[0] == origin_index(points)
    # after 1 + 8 points: the 3x3 grid of the ends and the origin; after 25: the 5x5 grid
    for size, axis in ((9, {-0.4, 0.0, 0.4}), (25, {-0.4, -0.2, 0.0, 0.2, 0.4})):
        done = {(points[i].alpha, points[i].beta) for i in order[:size]}
        assert done == {(a, b) for a in axis for b in axis}


def test_coarse_to_fine_covers_each_offset_once_far_end_first():
    for n in range(0, 15):
        order = coarse_to_fine(n)
        assert sorted(order) == list(range(1, n + 1))
        if n:
            assert order[0] == n
    assert coarse_to_fine(10) == [10, 5, 2, 4, 6, 8, 1, 3, 7, 9]


@pytest.mark.parametrize("left_edge", [-0.42, -0.31, -0.2, -0.07])
@pytest.mark.parametrize("right_edge", [0.03, 0.12, 0.26, 0.49, None])
def test_adaptive_edge_matches_the_full_grid_edge_with_fewer_points(left_edge, right_edge):
    def landscape(a):  # a basin at 25% with a steep wall on each side
        if a < 0:
            return 100.0 if a <= left_edge else 25.0
        return 100.0 if right_edge is not None and a >= right_edge else 25.0

    points = plan(Grid(1, 20, 0.5))
    full = {i: landscape(p.alpha) for i, p in enumerate(points)}
    adaptive = _run(AdaptiveEdges(), points, landscape)

    def edges(asr):
        keys = sorted(asr)
        return basin_edges([points[i].alpha for i in keys], [asr[i] for i in keys], 25.0)

    for got, want in zip(edges(adaptive), edges(full), strict=True):
        assert (got is None) == (want is None)
        if want is not None:
            assert got == pytest.approx(want, abs=1e-9)
    # the savings are the points beyond the edges: none when both edges are at the ends
    beyond = sum(
        1
        for p in points
        if (p.alpha < left_edge - 0.05) or (right_edge is not None and p.alpha > right_edge + 0.05)
    )
    assert len(adaptive) <= len(full) and (beyond < 4 or len(adaptive) < len(full))


@pytest.mark.parametrize("radius", [0.07, 0.16, 0.26])
def test_adaptive_2d_outlines_the_basin_along_eight_rays(radius):
    grid = Grid(2, 12, 0.3)
    points = plan(grid)

    def landscape(a, b):  # an elliptic basin, wider along alpha
        return 25.0 if (a / radius) ** 2 + (b / (0.7 * radius)) ** 2 < 1 else 90.0

    full = {i: landscape(p.alpha, p.beta) for i, p in enumerate(points)}
    asr: dict[int, float] = {}
    order = AdaptiveEdges()
    while (i := order.next_point(points, asr)) is not None:
        asr[i] = landscape(points[i].alpha, points[i].beta)
    adaptive = asr

    def outline(values):
        asr = {(points[i].alpha, points[i].beta): v for i, v in values.items()}
        return basin_outline(asr, grid, 25.0)

    assert outline(adaptive) == outline(full)
    along_alpha = outline(full)[0]
    assert along_alpha["angle_deg"] == 0.0 and along_alpha["beta"] == 0.0
    assert along_alpha["radius"] is None or abs(along_alpha["radius"] - radius) <= 0.025
    assert len(adaptive) < len(full) / 2  # 169 grid points; rays cover at most 49


def test_adaptive_finds_the_first_crossing_of_a_bumpy_landscape():
    # measured on Qwen (direction 1, 40 prompts): a bump above the level at +0.15, a dip at
    # +0.20; a coarse pass with bisection alone would report the edge near +0.23
    values = {0.0: 25.0, 0.05: 30.0, 0.1: 35.0, 0.15: 50.0, 0.2: 40.0, 0.25: 47.5, 0.3: 95.0}
    points = plan(Grid(1, 12, 0.3))

    def landscape(a):
        return values[abs(round(a, 2))] if a >= 0 else 25.0

    full = {i: landscape(p.alpha) for i, p in enumerate(points)}
    adaptive = _run(AdaptiveEdges(), points, landscape)

    def right_edge(asr):
        keys = sorted(asr)
        return basin_edges([points[i].alpha for i in keys], [asr[i] for i in keys], 25.0)[1]

    assert (
        right_edge(adaptive) == pytest.approx(right_edge(full)) == pytest.approx(0.1 + 0.05 / 1.5)
    )
    assert len(adaptive) < len(full)
