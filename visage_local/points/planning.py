"""Which point a sweep evaluates next: the whole grid, or an adaptive search of the basin edges.

An order looks only at the points already finished (their ASRs), never at its
own history, so a stopped sweep resumes where it left off and a folder started
adaptively can later be completed as a full grid, reusing every point.

- ``FullGrid``: every point, the origin first; ``coarse_first`` visits the grid
  coarse to fine: the far ends of both sides of every axis, then the halves, and
  so on (``coarse_to_fine`` on each side), both sides at each level before the
  next, so a sweep stopped by ``--budget-minutes`` covers the whole grid evenly.
- ``Shard``: the origin, then one of ``count`` shares of the other points, so that
  ``count`` sweeps (on other machines, or on other days) cover the grid between them;
  ``merge.merge_runs`` joins their folders into the whole landscape.
- ``AdaptiveEdges``: in 1D, the origin, then on each side coarse points walking
  outwards until one exceeds the origin's ASR by ``threshold``, bisection over
  the grid points between the last point inside and the first outside, then
  every point between the origin and the bracket (so a bump inside the basin is
  not missed): the edge equals the full grid's, from fewer points. In 2D the
  same search runs along eight rays from the origin (the axes and diagonals),
  whose edges outline the basin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

from visage_local.points.grid import Grid, InterpolationGrid, Point
from visage_local.stats import EDGE_THRESHOLD


class PointOrder(Protocol):
    """Chooses the next point of a plan to evaluate."""

    name: str

    def next_point(self, points: list[Point], asr: dict[int, float]) -> int | None:
        """Index into ``points`` of the next point, or None when the order is finished."""


def origin_index(points: list[Point]) -> int:
    """Where the origin is in a plan."""
    return next(i for i, p in enumerate(points) if p.is_origin)


def _sides(points: list[Point]) -> tuple[list[int], list[int]]:
    """Plan indices of a 1D plan's points left and right of the origin, nearest first."""
    by_alpha = sorted(range(len(points)), key=lambda i: points[i].alpha)
    centre = by_alpha.index(origin_index(points))
    return by_alpha[:centre][::-1], by_alpha[centre + 1 :]


# Rays of a 2D search, in grid steps: along the axes and the diagonals, so that every
# point of a ray is a grid point.
RAYS = ((1, 0), (1, 1), (0, 1), (-1, 1), (-1, 0), (-1, -1), (0, -1), (1, -1))


def rays(points: list[Point]) -> list[tuple[tuple[int, int], list[int]]]:
    """A 2D plan's rays from the origin: (step, plan indices nearest first), for RAYS."""
    by_value = {(p.alpha, p.beta): i for i, p in enumerate(points)}
    alphas = sorted({p.alpha for p in points})
    betas = sorted({p.beta for p in points})
    a0, b0 = alphas.index(0.0), betas.index(0.0)
    out = []
    for da, db in RAYS:
        line, k = [], 1
        while 0 <= a0 + k * da < len(alphas) and 0 <= b0 + k * db < len(betas):
            index = by_value.get((alphas[a0 + k * da], betas[b0 + k * db]))
            if index is None:
                break
            line.append(index)
            k += 1
        out.append(((da, db), line))
    return out


def coarse_to_fine(n: int) -> list[int]:
    """Offsets 1..n, the far end first, then halving: a prefix of any length spreads evenly."""
    if n == 0:
        return []
    order = [n]
    step = n
    while len(order) < n:
        step = max(1, step // 2)
        order += [k for k in range(step, n + 1, step) if k not in order]
    return order


def _axis_ranks(values: list[float]) -> dict[float, int]:
    """Each coordinate of one axis with its place in the coarse-to-fine visit of its side:
    -1 for the origin, then 0, 1, ... as ``coarse_to_fine`` orders that side's offsets."""
    axis = sorted(set(values))
    centre = axis.index(0.0)
    ranks = {0.0: -1}
    for side in (axis[:centre][::-1], axis[centre + 1 :]):
        for rank, offset in enumerate(coarse_to_fine(len(side))):
            ranks[side[offset - 1]] = rank
    return ranks


@dataclass(frozen=True)
class FullGrid:
    """Every point of the plan, the origin first."""

    coarse_first: bool = False
    name: str = "grid"

    def order(self, points: list[Point]) -> list[int]:
        """The visiting order: plan order, or coarse to fine over both sides alike.

        Coarse to fine, a point's level is its axis rank (``_axis_ranks``); in 2D the
        larger of its two ranks, so each level completes a nested, coarser grid. Ties:
        the lower other rank first, then left before right, bottom before top.
        """
        origin = origin_index(points)
        if not self.coarse_first:
            return [origin] + [i for i in range(len(points)) if i != origin]
        alpha = _axis_ranks([p.alpha for p in points])
        if points[0].beta is None:
            return sorted(
                range(len(points)), key=lambda i: (alpha[points[i].alpha], points[i].alpha)
            )
        beta = _axis_ranks([p.beta for p in points])

        def level(i: int) -> tuple[int, int, float, float]:
            a, b = alpha[points[i].alpha], beta[points[i].beta]
            return max(a, b), min(a, b), points[i].alpha, points[i].beta

        return sorted(range(len(points)), key=level)

    def next_point(self, points: list[Point], asr: dict[int, float]) -> int | None:
        """The first point of the order not yet finished."""
        return next((i for i in self.order(points) if i not in asr), None)


class OriginOnly:
    """The plan's origin, then nothing: what figures of the model itself need (``check``,
    the first stage of ``screen``)."""

    name = "origin"

    def next_point(self, points: list[Point], asr: dict[int, float]) -> int | None:
        """The origin until it is evaluated."""
        index = origin_index(points)
        return None if index in asr else index


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (1-based): the origin, then every ``count``-th of the
    plan's other points in plan order, from the ``index``-th. Every shard evaluates the
    origin, so each has the reference its figures need and merged shards can be checked
    against one another on it."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if not 1 <= self.index <= self.count or self.count < 2:
            raise ValueError(f"shard {self.index}/{self.count}: need 1 <= I <= N and N >= 2")

    @property
    def name(self) -> str:
        """The order as summaries record it."""
        return f"shard {self}"

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"  # as --shard takes it

    def share(self, points: list[Point]) -> list[int]:
        """Plan indices of the shard's points, the origin first."""
        origin = origin_index(points)
        others = [i for i in range(len(points)) if i != origin]
        return [origin] + others[self.index - 1 :: self.count]

    def next_point(self, points: list[Point], asr: dict[int, float]) -> int | None:
        """The first point of the shard not yet finished."""
        return next((i for i in self.share(points) if i not in asr), None)


@dataclass(frozen=True)
class AdaptiveEdges:
    """Find each basin edge by a coarse pass, bisection and fill-in: on both sides of a 1D
    landscape, or along the eight rays of a 2D one (axes and diagonals)."""

    threshold: float = EDGE_THRESHOLD
    coarse_points: int = 3  # per side, walking outwards
    name: str = "adaptive"

    def next_point(self, points: list[Point], asr: dict[int, float]) -> int | None:
        """The next point the search needs, or None when both edges are bracketed."""
        origin = origin_index(points)
        if origin not in asr:
            return origin
        level = asr[origin] + self.threshold
        sides = _sides(points) if points[0].beta is None else [r for _, r in rays(points)]
        for side in sides:
            wanted = self._next_on_side(side, asr, level)
            if wanted is not None:
                return wanted
        return None

    def _next_on_side(self, side: list[int], asr: dict[int, float], level: float) -> int | None:
        n = len(side)
        stride = max(1, math.ceil(n / self.coarse_points))
        coarse = sorted({*range(stride, n + 1, stride), n}) if n else []
        inside = 0  # offset 0 is the origin
        for offset in coarse:
            index = side[offset - 1]
            if index not in asr:
                return index
            if asr[index] > level:
                wanted = self._bisect(side, asr, level, inside, offset)
                return wanted if wanted is not None else self._fill(side, asr, level)
            inside = offset
        return None  # the whole side stays within the basin

    @staticmethod
    def _bisect(side, asr, level, inside: int, outside: int) -> int | None:
        while outside - inside > 1:
            middle = (inside + outside) // 2
            index = side[middle - 1]
            if index not in asr:
                return index
            if asr[index] > level:
                outside = middle
            else:
                inside = middle
        return None

    @staticmethod
    def _fill(side, asr, level) -> int | None:
        """The first unevaluated point inward of the nearest evaluated point past the level.

        Landscapes are not monotone (sampling noise, or a real bump), so once an
        edge is bracketed every point between it and the origin is evaluated too:
        the edge is then the first crossing walking outwards, exactly as on the
        full grid. The savings are the points beyond the edge.
        """
        for index in side:
            if index not in asr:
                return index
            if asr[index] > level:
                return None
        return None


def plan(grid: Grid | InterpolationGrid) -> list[Point]:
    """The points a sweep evaluates: the grid, plus the origin when the grid misses it."""
    points = grid.points()
    if not grid.contains_origin():
        points.append(Point(0.0, None if grid.dims == 1 else 0.0))
    return points
