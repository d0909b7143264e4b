"""The overlapped route (the next point's weights prepared while a point generates) gives
what the sequential route gives, on SmolLM2 and on a model of Llama 3.2 1B's shape."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from visage_local import synthetic
from visage_local.asking.chat import SystemPrompt
from visage_local.asking.prompts import PromptSet, load_prompts
from visage_local.engine.llama import EngineSettings
from visage_local.engine.quantize import quantize_model
from visage_local.points.grid import Grid, Point
from visage_local.points.planning import AdaptiveEdges, FullGrid
from visage_local.run.evaluator import PointResult, evaluator
from visage_local.run.prepared import prepare
from visage_local.run.settings import SweepConfig
from visage_local.run.sweep import _following

pytestmark = pytest.mark.slow

# The origin, a point prepared while the origin generates, a point prepared but not
# evaluated (a wrong guess), a last one.
ROUTE = [(Point(0.0), Point(0.3)), (Point(0.3), Point(0.15)), (Point(-0.3), None)]


def _evaluate(config: SweepConfig, folder: Path) -> list[PointResult]:
    """ROUTE's points in order through one evaluator; with overlap, each evaluation asks
    for the next point to be prepared, and it is, until the wrong guess is dropped."""
    results = []
    with evaluator(prepare(config), folder) as live:
        for index, (point, following) in enumerate(ROUTE):
            results.append(live.evaluate(index, point, following))
            assert live.preparing == (following if config.overlaps else None)
    return results


def _same(sequential: list[PointResult], overlapped: list[PointResult]) -> None:
    for one, two in zip(sequential, overlapped, strict=True):
        fields = ("prompt_index", "response", "refused", "matched", "tokens", "stop_reason")
        assert [{k: r[k] for k in fields} for r in one.records] == [
            {k: r[k] for k in fields} for r in two.records
        ]
        assert one.point_record.displacement == two.point_record.displacement
        phases = two.point_record.weight_update_phases
        if one.point_record.alpha:  # the prepared work is the point's own
            assert phases["requantize"] > 0 and phases["write"] > 0


def _config(model: Path, **kw) -> SweepConfig:
    settings = dict(
        model_path=model,
        prompts=load_prompts("builtin", 3),
        grid=Grid(1, 2, 0.3),
        max_new_tokens=8,
        engine=EngineSettings(threads=2, max_sequences=3),
        coherence=False,
    )
    return SweepConfig(**(settings | kw))


def test_overlapped_route_gives_the_sequential_answers_on_smollm2(smollm2, tmp_path):
    """Directions cached between points."""
    config = _config(smollm2, overlap=False)
    sequential = _evaluate(config, tmp_path)
    overlapped = _evaluate(replace(config, overlap=True), tmp_path)
    assert len({r.records[0]["response"] for r in sequential}) > 1  # the points differ
    _same(sequential, overlapped)


def test_overlapped_route_gives_the_sequential_answers_at_llama_1b_shape(tmp_path):
    """Llama 3.2 1B's tensors and vocabulary (random weights, Q4_0 by llama.cpp's quantiser:
    Q4_K_M takes five times longer to make), two of its 16 layers (the test moves one:
    the others would only make writing the file slower), no direction cache: directions
    drawn block by block in the preparing thread."""
    arch, size = synthetic.SCALES["llama-3.2-1b"]
    source = synthetic.write_model(tmp_path / "f16.gguf", arch, replace(size, n_layer=2))
    model = quantize_model(source, tmp_path / "q4_0.gguf", "Q4_0")
    source.unlink()
    # short prompts, no system prompt: the tokenizer makes a token of each byte, and 1B
    # evaluates about 40 prompt tokens a second on two threads
    short = PromptSet("short", ("Say hi.", "Count to three."))
    config = _config(model, prompts=short, system_prompt=SystemPrompt("none"),
                     include=("blk.0.",), memory_budget_mb=0, max_new_tokens=4,
                     overlap=False)  # fmt: skip
    sequential = _evaluate(config, tmp_path)
    overlapped = _evaluate(replace(config, overlap=True), tmp_path)
    _same(sequential, overlapped)


def test_the_next_point_is_prepared_only_when_the_order_does_not_wait_for_a_result():
    points = [Point(a) for a in Grid(1, 6, 0.5).alpha_axis()]
    origin = next(i for i, p in enumerate(points) if p.is_origin)
    grid = FullGrid()
    order = grid.order(points)
    assert _following(grid, points, {}, order[0]) == points[order[1]]
    assert _following(grid, points, {i: 0.0 for i in order[:-1]}, order[-1]) is None
    # the adaptive search's next point after the origin depends on the origin's ASR only
    # through the level; its first coarse points do not
    adaptive = AdaptiveEdges()
    after_origin = _following(adaptive, points, {}, origin)
    assert after_origin is not None and after_origin != points[origin]
    # at a coarse point, safe and broken lead to different next points: nothing prepared
    first = points.index(after_origin)
    assert _following(adaptive, points, {origin: 10.0}, first) is None
