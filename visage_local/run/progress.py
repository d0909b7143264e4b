"""Controlling a running sweep: Ctrl-C, the time budget, and how it stopped."""

from __future__ import annotations

import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from visage_local.errors import VisageError
from visage_local.points.grid import Point


class StopRequest:
    """First Ctrl-C: finish the current point, then stop; second Ctrl-C: stop at once."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


@dataclass
class Progress:
    """How a sweep is going: its order, its time budget, point times, and what it skipped."""

    order: str
    budget_minutes: float | None
    durations: list[float] = field(default_factory=list)
    skipped: list[Point] = field(default_factory=list)

    def would_overrun(self, deadline: float) -> bool:
        """True when one more point of the mean duration so far would end after ``deadline``."""
        if not self.durations:
            return False
        return time.monotonic() + float(np.mean(self.durations)) > deadline

    def describe(self) -> dict:
        """The summary's record of it."""
        return {
            "order": self.order,
            "budget_minutes": self.budget_minutes,
            "seconds_per_point": round(float(np.mean(self.durations)), 3)
            if self.durations
            else None,
            "skipped": [{"alpha": p.alpha, "beta": p.beta} for p in self.skipped],
        }


class SweepInterrupted(VisageError):
    """The user asked the sweep to stop; finished points are saved."""

    exit_code = 130

    def __init__(self, folder: Path, done: int, total: int):
        super().__init__(
            f"stopped after {done} of {total} points; run the same command again to resume "
            f"(results so far are in {folder})"
        )
