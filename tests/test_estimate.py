"""The estimate's sample of tensors stands for every value of every type (the tensor table
as the header reader gives it, itself checked against gguf-py's reader in
test_gguf_header.py), and its probe point is one the weight update really computes."""

from __future__ import annotations

import math
from collections import defaultdict

import pytest
from gguf import GGMLQuantizationType

from visage_local.engine.llama import ALL_LAYERS, Engine, EngineSettings
from visage_local.gguf.header import read_header
from visage_local.gguf.model import GGUFModel
from visage_local.points.grid import Grid, InterpolationGrid, Point
from visage_local.points.planning import plan
from visage_local.run.estimate import Estimate, probe_point, samples, time_reload
from visage_local.weights.directions import RandomDirection
from visage_local.weights.perturb import Perturbation


def test_the_sample_stands_for_every_value_of_each_type(qwen, gemma, smollm2):
    for path in (qwen, gemma, smollm2):
        model = GGUFModel(path)
        targets = Perturbation(model, [RandomDirection(123)]).targets
        names = {t.name for t in targets}
        values: dict[str, int] = defaultdict(int)  # the oracle: the file's tensor table
        for entry in read_header(path).tensors:
            if entry.name in names:
                values[GGMLQuantizationType(entry.type_id).name] += math.prod(entry.shape)
        stood_for: dict[str, float] = defaultdict(float)
        for info, factor in samples(targets):
            stood_for[info.qtype.name] += info.n_elements * factor
        assert set(stood_for) == set(values), path.name
        for qtype, n in values.items():
            assert abs(stood_for[qtype] - n) < 1e-6 * n, (path.name, qtype)
        timed = {info.name for info, _ in samples(targets)}
        layers = sorted({int(n.split(".")[1]) for n in names if n.startswith("blk.")})
        middle = f"blk.{layers[len(layers) // 2]}."
        assert {n for n in names if n.startswith(middle)} <= timed  # the whole middle layer
        assert len(timed) < len(names) / 4  # and not much more


def test_the_probe_point_is_moved_and_computed():
    random_points = plan(Grid(1, 20, 0.5))
    point = probe_point(random_points)
    assert point is not None and not point.is_origin
    # an interpolation's t = 1 is the finetune's own bytes: never the probe
    assert probe_point([Point(0.0), Point(1.0)]) is None
    assert probe_point(plan(InterpolationGrid(steps=4))).coefficients()[0] not in (0.0, 1.0)
    assert probe_point([Point(0.0)]) is None


def _estimate(update_s: float, reload_s: float) -> Estimate:
    return Estimate(first_update_s=2 * update_s, update_s=update_s, prefill_s=4.0, decode_s=5.0,
                    score_s=1.0, n_points=21, scratch_bytes=0, origin_bytes=0, kv_bytes=0,
                    working_bytes=0, cache_bytes=0, probe_s=1.0, reload_s=reload_s)  # fmt: skip


def test_a_gpu_run_is_told_when_the_update_bounds_its_points():
    """Layers on a GPU (a reload timed): a note when the update outlasts the 10 s of
    generation, none when it does not, none on the CPU alone (no reload)."""
    (note,) = _estimate(update_s=60.0, reload_s=1.5).notes()
    assert "the weight update bounds a point (60 s against 10 s of generation)" in note
    assert "--requant q8_0" in note
    assert _estimate(update_s=9.0, reload_s=1.5).notes() == []
    assert _estimate(update_s=60.0, reload_s=0.0).notes() == []


@pytest.mark.slow
def test_the_reload_is_timed_only_with_layers_offloaded(smollm2):
    """The estimate's reload: the model loaded again from its file where layers are
    offloaded (on a build without a GPU backend llama.cpp keeps them on the CPU, but the
    route is the same), nothing on the CPU alone; the reloaded model answers as before."""
    with Engine(smollm2, EngineSettings(threads=2)) as cpu:
        assert time_reload(cpu) == 0.0
    with Engine(smollm2, EngineSettings(threads=2, n_gpu_layers=ALL_LAYERS)) as offloaded:
        prompt = offloaded.tokenize("Hello")
        before = offloaded.generate([prompt], 8)[0].tokens
        assert time_reload(offloaded) > 0.0
        assert offloaded.generate([prompt], 8)[0].tokens == before
