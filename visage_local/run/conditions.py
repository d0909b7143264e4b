"""Several sweeps on one grid: system prompts x attacks, or several random directions.

Every variant is an ordinary sweep in a folder of its own inside the output
folder, so each resumes and reports on its own. ``conditions.json`` lists them
with their VISAGE and basin edges; in 1D ``overlay.png`` draws their landscapes
on one figure. Conditions (``<system prompt>--<attack>``) share the directions;
directions (``direction-<k>``: index k of the seed) share everything else, and
``directions.json`` adds the mean VISAGE across them, with an interval that counts
both the directions and the prompts (``landscape.across_directions``), and the mean
edges with 95% t intervals.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

from visage_local.analysis import plots
from visage_local.analysis.landscape import across_directions
from visage_local.asking.attacks import Attack
from visage_local.asking.chat import SystemPrompt
from visage_local.files import atomic_write_text
from visage_local.record import RunFolder, RunSummary
from visage_local.run.estimate import Estimate
from visage_local.run.evaluator import PointOutcome
from visage_local.run.settings import SweepConfig
from visage_local.run.sweep import SweepOptions, run_sweep


@dataclass(frozen=True)
class Condition:
    """One system prompt and one attack."""

    system_prompt: SystemPrompt
    attack: Attack

    @property
    def label(self) -> str:
        """``system-<name>--attack-<name>``: the condition's folder and legend."""
        return f"system-{self.system_prompt.short_label()}--attack-{self.attack.short_label()}"


def conditions_of(system_prompts: list[SystemPrompt], attacks: list[Attack]) -> list[Condition]:
    """Every system prompt with every attack, in the order given."""
    return [Condition(s, a) for s in system_prompts for a in attacks]


def condition_variants(
    base: SweepConfig, conditions: list[Condition]
) -> list[tuple[str, SweepConfig]]:
    """One sweep configuration per condition."""
    return [
        (c.label, replace(base, system_prompt=c.system_prompt, attack=c.attack)) for c in conditions
    ]


def direction_variants(base: SweepConfig, count: int) -> list[tuple[str, SweepConfig]]:
    """One 1D sweep configuration per random direction: indices 0..count-1 of the seed."""
    return [(f"direction-{k}", replace(base, first_direction=k)) for k in range(count)]


def run_variants(
    variants: list[tuple[str, SweepConfig]],
    options: SweepOptions,
    on_point: Callable[[str, PointOutcome, int, int], None] | None = None,
    on_estimate: Callable[[str, Estimate], None] | None = None,
) -> list[tuple[str, RunSummary]]:
    """Sweep every variant in ``options.out_dir/<label>``, in turn; return (label, summary)
    pairs. ``on_point`` and ``on_estimate`` are ``SweepOptions``' with the variant's label.

    A time budget is shared: each variant gets what is left divided by the variants left.
    """
    out_dir = Path(options.out_dir)
    results: list[tuple[str, RunSummary]] = []
    spent = 0.0
    for k, (label, config) in enumerate(variants):
        share = None
        if options.budget_minutes is not None:
            share = max(0.0, options.budget_minutes - spent) / (len(variants) - k)

        summary = run_sweep(
            config,
            replace(
                options,
                out_dir=out_dir / label,
                on_point=None if on_point is None else partial(on_point, label),
                on_estimate=None if on_estimate is None else partial(on_estimate, label),
                budget_minutes=share,
            ),
        )
        spent += summary.elapsed_s / 60.0
        results.append((label, summary))
        write_index(out_dir, results)
    return results


def write_index(out_dir: Path, results: list[tuple[str, RunSummary]]) -> None:
    """conditions.json (one entry per finished variant), directions.json when the variants
    differ by direction, and in 1D overlay.png."""
    entries = [
        {
            "label": label,
            "folder": label,
            "system_prompt": s.system_prompt,
            "attack": s.attack,
            "direction": s.directions[0],
            "visage": s.visage,
            "visage_ci": s.visage_ci,
            "origin_asr": s.origin_asr,
            "basin_edges": s.basin_edges,
        }
        for label, s in results
    ]
    atomic_write_text(RunFolder(out_dir).conditions, json.dumps(entries, indent=2))
    if all(label.startswith("direction-") for label, _ in results):
        atomic_write_text(
            RunFolder(out_dir).directions,
            json.dumps(across_directions(out_dir, results), indent=2),
        )
    first = results[0][1]
    if first.dims == 1:
        plots.plot_conditions_1d(
            results,
            f"{first.display_name}: {first.n_prompts} prompts, seed {first.seed}",
            RunFolder(out_dir).overlay,
        )
