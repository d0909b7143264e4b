"""What every judge is: a verdict per (prompt, response), and maybe an early-stop predicate."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Verdict:
    """A judge's decision on one response."""

    refused: bool
    matched: str | None  # the refusal string found, or the judge model's answer


class Judge(Protocol):
    """What a sweep needs of a judge."""

    name: str

    @property
    def settled(self) -> Callable[[str], bool] | None:
        """A predicate on partial responses for early stopping, or None."""

    def judge_many(self, prompts: Sequence[str], responses: Sequence[str]) -> list[Verdict]:
        """One verdict per (prompt, response)."""

    def close(self) -> None:
        """Release what the judge holds (a model); nothing for keyword judges."""
