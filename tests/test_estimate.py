"""The estimate's sample of tensors stands for every value of every type (the tensor table
as the header reader gives it, itself checked against gguf-py's reader in
test_gguf_header.py), and its probe point is one the weight update really computes."""

from __future__ import annotations

import math
from collections import defaultdict

from gguf import GGMLQuantizationType

from visage_local.directions import RandomDirection
from visage_local.estimate import probe_point, samples
from visage_local.gguf_header import read_header
from visage_local.gguf_model import GGUFModel
from visage_local.grid import Grid, InterpolationGrid, Point
from visage_local.perturb import Perturbation
from visage_local.planning import plan


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
