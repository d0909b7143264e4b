"""Grid plans: which points a sweep evaluates, and in which order."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from visage_local.asking import reference
from visage_local.errors import ConfigError

MAX_STEPS = 200
MAX_RANGE = 10.0


@dataclass(frozen=True)
class Point:
    """A point of the landscape: alpha along direction 1, beta along direction 2 (None in 1D)."""

    alpha: float
    beta: float | None = None

    @property
    def is_origin(self) -> bool:
        """True at a = b = 0, where the model is the original."""
        return self.alpha == 0 and not self.beta

    def coefficients(self) -> tuple[float, ...]:
        """The multipliers of the directions, in order."""
        return (self.alpha,) if self.beta is None else (self.alpha, self.beta)


def check_grid_settings(dims: int, steps: int, range_: float) -> None:
    """ConfigError unless the settings describe a grid a sweep can evaluate."""
    if dims not in (1, 2):
        raise ConfigError("--dims must be 1 or 2")
    if not 1 <= steps <= MAX_STEPS:
        raise ConfigError(f"--steps must be between 1 and {MAX_STEPS}")
    if not (0 < range_ <= MAX_RANGE) or not np.isfinite(range_):
        raise ConfigError(f"--range must be a number in (0, {MAX_RANGE}]")


@dataclass(frozen=True)
class Grid:
    """steps+1 values per axis over [-range, range]; 1 or 2 axes."""

    dims: int = 1
    steps: int = reference.STEPS
    range: float = reference.RANGE

    def __post_init__(self):
        check_grid_settings(self.dims, self.steps, self.range)

    def axis(self) -> list[float]:
        """The coordinates along one axis (exact 0 where the grid crosses the origin)."""
        values = np.linspace(-self.range, self.range, self.steps + 1)
        return [0.0 if abs(v) < 1e-12 else round(float(v), 12) for v in values]

    def points(self) -> list[Point]:
        """Every grid point, in the order a sweep visits them.

        2D grids are walked in snake order (alpha rows alternate direction), so
        consecutive points are neighbours.
        """
        axis = self.axis()
        if self.dims == 1:
            return [Point(a) for a in axis]
        out = []
        for row, beta in enumerate(axis):
            alphas = axis if row % 2 == 0 else axis[::-1]
            out.extend(Point(a, beta) for a in alphas)
        return out

    def alpha_axis(self) -> list[float]:
        """The alpha values."""
        return self.axis()

    def beta_axis(self) -> list[float]:
        """The beta values (2D)."""
        return self.axis()

    def contains_origin(self) -> bool:
        """True when the origin is a grid point (an even number of steps)."""
        return 0.0 in self.axis()

    def describe(self) -> dict[str, object]:
        """The grid's settings for summaries."""
        return {"dims": self.dims, "steps": self.steps, "range": self.range}


@dataclass(frozen=True)
class InterpolationGrid:
    """An interpolation landscape's grid.

    Along t: [0, 1] in ``steps`` steps (t = 0 is the base model, t = 1 the
    finetune), with ``extra`` more steps beyond each end, as the reference
    code's additional steps. In 2D, beta runs along a random direction over
    [-range, range] in ``steps`` steps (the reference "interpolation-random").
    """

    dims: int = 1
    steps: int = 10
    extra: int = 0
    range: float = reference.RANGE

    def __post_init__(self):
        check_grid_settings(self.dims, self.steps, self.range)
        if not 0 <= self.extra <= MAX_STEPS:
            raise ConfigError(f"--extra must be between 0 and {MAX_STEPS}")

    def alpha_axis(self) -> list[float]:
        """The t values."""
        return [
            round(k / self.steps, 12) + 0.0 for k in range(-self.extra, self.steps + self.extra + 1)
        ]

    def beta_axis(self) -> list[float]:
        """The beta values (2D)."""
        return Grid(1, self.steps, self.range).axis()

    def points(self) -> list[Point]:
        """Every grid point; 2D in snake order."""
        if self.dims == 1:
            return [Point(t) for t in self.alpha_axis()]
        out = []
        for row, beta in enumerate(self.beta_axis()):
            ts = self.alpha_axis() if row % 2 == 0 else self.alpha_axis()[::-1]
            out.extend(Point(t, beta) for t in ts)
        return out

    def contains_origin(self) -> bool:
        """True when t = 0 (and in 2D beta = 0) are grid values."""
        return self.dims == 1 or 0.0 in self.beta_axis()

    def describe(self) -> dict[str, object]:
        """The grid's settings for summaries."""
        return {
            "kind": "interpolation",
            "dims": self.dims,
            "steps": self.steps,
            "extra": self.extra,
            "range": self.range,
        }


def grid_from_description(description: dict) -> Grid | InterpolationGrid:
    """The grid a summary's ``grid`` entry describes."""
    settings = {k: v for k, v in description.items() if k != "kind"}
    if description.get("kind") == "interpolation":
        return InterpolationGrid(**settings)
    return Grid(**settings)
