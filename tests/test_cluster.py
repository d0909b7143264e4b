"""Sweeps on a local Ray cluster started by the test: the same results as a local sweep,
and a worker killed mid-sweep costs nothing but time."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from visage_local.asking.prompts import load_prompts
from visage_local.engine.llama import EngineSettings
from visage_local.errors import ConfigError
from visage_local.gguf.model import file_sha256
from visage_local.points.grid import Grid
from visage_local.points.planning import AdaptiveEdges
from visage_local.run.cluster import WORKER_NAME, PointWorker, RayOptions
from visage_local.run.settings import SweepConfig
from visage_local.run.sweep import SweepOptions, run_sweep

ray = pytest.importorskip("ray")  # the [ray] extra: scripts/test.sh installs it

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local_cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _config(model) -> SweepConfig:
    return SweepConfig(
        model_path=model, prompts=load_prompts("builtin", 4), grid=Grid(1, 4, 0.4),
        max_new_tokens=12, engine=EngineSettings(threads=1, max_sequences=4), coherence=True,
    )  # fmt: skip


def _comparable(folder):
    summary = json.loads((folder / "summary.json").read_text())
    for key in ("elapsed_s", "seconds_per_point"):
        summary.pop(key, None)
    for point in summary["points"]:
        point.pop(
            "displacement", None
        )  # includes timings-free figures, but floats summed in another order
    generations = sorted(
        (json.loads(line) for line in (folder / "generations.jsonl").read_text().splitlines()),
        key=lambda r: (r["point"], r["prompt_index"]),
    )
    return summary, generations


@pytest.fixture(scope="module")
def local_folder(smollm2, tmp_path_factory):
    folder = tmp_path_factory.mktemp("local") / "run"
    run_sweep(_config(smollm2), SweepOptions(folder))
    return folder


@pytest.fixture(scope="module")
def local_run(local_folder):
    return _comparable(local_folder)


def test_ray_sweep_equals_the_local_sweep(local_cluster, local_run, smollm2, tmp_path):
    run_sweep(_config(smollm2), SweepOptions(tmp_path / "ray", ray=RayOptions(2)))
    summary, generations = _comparable(tmp_path / "ray")
    want_summary, want_generations = local_run
    assert generations == want_generations
    assert summary["points"] == want_summary["points"]
    assert summary["visage"] == want_summary["visage"]
    assert summary["coherence_threshold"] == want_summary["coherence_threshold"]
    assert summary["config_hash"] == want_summary["config_hash"]  # resumable either way


def test_a_worker_killed_mid_sweep_loses_nothing(local_cluster, local_run, smollm2, tmp_path):
    killed = []

    def kill_one(outcome, done, total):
        # the driver rewrites summary.json after every point, as a local sweep does
        written = json.loads((tmp_path / "ray" / "summary.json").read_text())
        assert written["n_points_evaluated"] == done and not written["complete"]
        if not killed and done >= 2:  # the origin and one more are in; others are in flight
            ray.kill(ray.get_actor(WORKER_NAME.format(0)))
            killed.append(done)

    run_sweep(
        _config(smollm2), SweepOptions(tmp_path / "ray", on_point=kill_one, ray=RayOptions(2))
    )
    assert killed
    summary, generations = _comparable(tmp_path / "ray")
    assert generations == local_run[1]
    assert summary["points"] == local_run[0]["points"] and summary["complete"]


def test_a_ray_run_resumes_a_local_folder(
    local_cluster, local_folder, local_run, smollm2, tmp_path
):
    folder = tmp_path / "run"
    config = _config(smollm2)
    shutil.copytree(local_folder, folder)  # the local sweep's own folder
    lines = (folder / "points.jsonl").read_text().splitlines()
    (folder / "points.jsonl").write_text("\n".join(lines[:2]) + "\n")  # as if cut after 2 points
    run_sweep(config, SweepOptions(folder, ray=RayOptions(2)))
    assert _comparable(folder)[1] == local_run[1]


def test_a_worker_refuses_a_model_file_that_differs(smollm2, tmp_path):
    copy = tmp_path / "other.gguf"
    shutil.copyfile(smollm2, copy)
    with copy.open("r+b") as f:
        f.seek(-1, 2)
        f.write(b"\x01")
    worker = PointWorker()
    assert worker.check({str(smollm2): file_sha256(smollm2)}) is None
    problem = worker.check({str(copy): file_sha256(smollm2)})
    assert "differs from the driver's file" in problem
    assert "does not exist" in worker.check({str(tmp_path / "missing.gguf"): "0"})


def test_serial_orders_are_refused(smollm2, tmp_path):
    with pytest.raises(ConfigError, match="full grids"):
        run_sweep(
            _config(smollm2), SweepOptions(tmp_path / "x", order=AdaptiveEdges(), ray=RayOptions(2))
        )


def test_the_command_line_runs_a_sweep_on_ray(tmp_path):
    out = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "visage_local.cli", "sweep", "--ray", "--workers", "2",
        "--threads", "1", "--steps", "2", "--limit", "2", "--max-new-tokens", "4",
        "--no-coherence", "--out", str(out),
    ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] and len(summary["points"]) == 3
    wrong = subprocess.run(
        [sys.executable, "-m", "visage_local.cli", "sweep", "--workers", "3", "--out", str(out)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert wrong.returncode == 2 and "--workers needs --ray" in wrong.stderr
