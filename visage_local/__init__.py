"""visage-local: safety landscapes of quantized LLMs on a laptop, with llama.cpp.

The package's public face: what a notebook uses, with the command line's defaults. Each
name is loaded from its own module when first used, so reading a run folder never loads
llama.cpp::

    from visage_local import Grid, SweepOptions, run_sweep, select_prompts, sweep_config

    config = sweep_config("model.gguf", Grid(1, 10, 0.5), select_prompts(None, 20))
    summary = run_sweep(config, SweepOptions("runs/notebook"))
    print(summary.visage, summary.basin_edges)

The packages, in the order data flows (docs/ARCHITECTURE.md): ``gguf``, ``record``,
``asking``, ``points``, ``weights``, ``engine``, ``judges``, ``analysis``, ``reading``,
``run``, ``workflows``, ``cli``; ``sources`` (where models come from) and ``training``
(the CPU testbed) sit beside the flow.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> the module that owns it
_PUBLIC = {
    "sweep_config": "visage_local.run.settings",
    "SweepConfig": "visage_local.run.settings",
    "prepare": "visage_local.run.prepared",
    "PreparedSweep": "visage_local.run.prepared",
    "run_sweep": "visage_local.run.sweep",
    "SweepOptions": "visage_local.run.sweep",
    "RayOptions": "visage_local.run.cluster",
    "run_variants": "visage_local.run.conditions",
    "direction_variants": "visage_local.run.conditions",
    "Grid": "visage_local.points.grid",
    "InterpolationGrid": "visage_local.points.grid",
    "Point": "visage_local.points.grid",
    "select_prompts": "visage_local.asking.prompts",
    "SystemPrompt": "visage_local.asking.chat",
    "EngineSettings": "visage_local.engine.llama",
    "RunFolder": "visage_local.record",
    "RunSummary": "visage_local.record",
    "across_directions": "visage_local.analysis.landscape",
    "landscape_verdict": "visage_local.analysis.verdict",
    "rejudge": "visage_local.reading.rejudge",
    "merge_runs": "visage_local.reading.merge",
    "compare_runs": "visage_local.reading.compare",
    "write_report": "visage_local.reading.report",
    "run_check": "visage_local.workflows.check",
    "Limits": "visage_local.workflows.check",
    "screen": "visage_local.workflows.screen",
    "Stages": "visage_local.workflows.screen",
    "resolve_model": "visage_local.sources.registry",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> object:
    """A public name, imported from its module the first time it is used (PEP 562)."""
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'visage_local' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    """The public names beside the module's own."""
    return sorted([*globals(), *_PUBLIC])
