"""Real sweeps on SmolLM2: every output file, resume, and guarded configuration."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace
from pathlib import Path

import llama_cpp
import pytest

from visage_local.asking.attacks import load_attack
from visage_local.asking.chat import SystemPrompt
from visage_local.asking.prompts import load_prompts
from visage_local.engine.llama import Engine, EngineSettings
from visage_local.errors import ConfigError
from visage_local.points.grid import Grid
from visage_local.run.settings import SweepConfig
from visage_local.run.sweep import SweepOptions, run_sweep

pytestmark = pytest.mark.slow

SUMMARY_KEYS = {
    "model", "model_sha256", "dims", "seed", "range", "steps", "n_prompts", "max_new_tokens",
    "system_prompt", "judge", "visage", "origin_asr", "points", "elapsed_s", "versions",
}  # fmt: skip
POINT_KEYS = {"alpha", "beta", "asr", "n_refused", "n_prompts"}
GENERATION_KEYS = {
    "alpha", "beta", "prompt_index", "prompt", "response", "refused", "matched", "tokens",
}  # fmt: skip


def _config(model, dims=1, n_prompts=5, seed=123, coherence=False, **kw) -> SweepConfig:
    return SweepConfig(
        model_path=model,
        prompts=load_prompts("builtin", n_prompts),
        grid=Grid(dims, 2, 0.5),
        seed=seed,
        max_new_tokens=16,
        engine=EngineSettings(threads=2),
        coherence=coherence,
        **kw,
    )


def _check_outputs(folder, dims, n_points, n_prompts):
    summary = json.loads((folder / "summary.json").read_text())
    assert set(summary) >= SUMMARY_KEYS
    assert summary["dims"] == dims and summary["n_prompts"] == n_prompts
    assert len(summary["points"]) == n_points
    # the build's instruction sets, as llama.cpp reports them: two builds' runs told apart
    features = [f.strip() for f in llama_cpp.llama_print_system_info().decode().split("|")]
    assert summary["versions"]["llama.cpp build"].split(" | ") == [f for f in features if f]
    for point in summary["points"]:
        assert set(point) >= POINT_KEYS
        assert 0 <= point["asr"] <= 100 and point["n_prompts"] == n_prompts
        assert point["asr"] == pytest.approx(100 * (1 - point["n_refused"] / n_prompts))
        assert (point["beta"] is None) == (dims == 1)
    lines = [json.loads(x) for x in (folder / "generations.jsonl").read_text().splitlines()]
    assert len(lines) == n_points * n_prompts
    for record in lines:
        assert set(record) >= GENERATION_KEYS
        assert isinstance(record["response"], str) and record["tokens"] <= 16
        assert record["refused"] == (record["matched"] is not None)
    csv_lines = (folder / "landscape.csv").read_text().splitlines()
    assert csv_lines[0].startswith("alpha,beta,asr") and len(csv_lines) == n_points + 1
    assert (folder / "landscape.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return summary, lines


def test_1d_sweep_writes_every_output(smollm2, tmp_path):
    estimates = []
    summary = run_sweep(
        _config(smollm2), SweepOptions(tmp_path / "run", on_estimate=estimates.append)
    )
    assert [e.record() for e in estimates] == [summary.estimate]  # said before the first point
    saved, lines = _check_outputs(tmp_path / "run", 1, 3, 5)
    assert [p["alpha"] for p in saved["points"]] == [-0.5, 0.0, 0.5]
    assert saved["origin_asr"] == saved["points"][1]["asr"]
    assert saved["visage"] is not None and summary.complete
    # SmolLM2 is not aligned: it answers the harmful prompts at the origin
    assert saved["origin_asr"] >= 60
    _check_timing(tmp_path / "run", saved, threads=2)


def _check_timing(folder: Path, saved: dict, threads: int) -> None:
    """The estimate is recorded with its parts, and what the points took is read from
    points.jsonl; each point's phases add up to no more than its threads' time."""
    points = [json.loads(x) for x in (folder / "points.jsonl").read_text().splitlines()]
    origin, first, later = points  # the order they ran in: the origin, then a = -0.5, +0.5
    assert (origin["alpha"], first["alpha"], later["alpha"]) == (0.0, -0.5, 0.5)
    for p in points:
        phases = p["weight_update_phases"]
        assert sum(phases.values()) <= threads * p["weight_update_s"] + 0.05
    assert origin["weight_update_phases"]["requantize"] == 0  # its bytes are the file's
    assert origin["weight_update_phases"]["draw"] == 0
    assert first["weight_update_phases"]["draw"] > 0  # the directions are drawn once, kept
    assert later["weight_update_phases"]["draw"] == 0
    assert all(p["weight_update_phases"][k] > 0 for p in (first, later) for k in
               ("read", "dequantize", "move", "requantize", "measure", "write"))  # fmt: skip
    estimate, actual = saved["estimate"], saved["actual"]
    parts = ("scratch_bytes", "origin_bytes", "kv_bytes", "working_bytes", "cache_bytes")
    assert estimate["peak_bytes"] == sum(estimate[k] for k in parts)
    assert estimate["origin_bytes"] == 0  # no coherence scoring: the original is not mapped
    assert estimate["scratch_bytes"] == Path(saved["model"]).stat().st_size
    generation = estimate["prefill_s"] + estimate["decode_s"] + estimate["score_s"]
    assert estimate["n_points"] == 3 and estimate["total_s"] == pytest.approx(
        3 * generation + estimate["first_update_s"] + estimate["update_s"], abs=0.01
    )
    assert estimate["score_s"] == 0 and estimate["decode_s"] > 0 and estimate["update_s"] > 0
    assert actual["first_update_s"] == first["weight_update_s"]
    assert actual["update_s"] == later["weight_update_s"]
    prefill = sorted(p["generation"]["prefill_s"] for p in points)[1]
    assert actual["prefill_s"] == prefill and actual["n_points"] == 3


def test_2d_sweep_writes_every_output(smollm2, tmp_path):
    run_sweep(_config(smollm2, dims=2, n_prompts=3), SweepOptions(tmp_path / "run"))
    saved, _ = _check_outputs(tmp_path / "run", 2, 9, 3)
    coords = {(p["alpha"], p["beta"]) for p in saved["points"]}
    assert coords == {(a, b) for a in (-0.5, 0.0, 0.5) for b in (-0.5, 0.0, 0.5)}
    assert saved["visage"] == pytest.approx(sum(100 - p["asr"] for p in saved["points"]) / 9)


def test_same_seed_same_landscape_and_resume_reuses_finished_points(smollm2, tmp_path):
    first = run_sweep(_config(smollm2, n_prompts=3), SweepOptions(tmp_path / "a"))
    lines_a = (tmp_path / "a" / "generations.jsonl").read_text().splitlines()
    # Cut the run after its first point (the origin), with half a line of the next.
    cut = tmp_path / "b"
    cut.mkdir()
    (cut / "config.json").write_text((tmp_path / "a" / "config.json").read_text())
    point_lines = (tmp_path / "a" / "points.jsonl").read_text().splitlines()
    (cut / "points.jsonl").write_text(point_lines[0] + "\n" + point_lines[1][:30])
    (cut / "generations.jsonl").write_text("\n".join(lines_a[:3]) + "\n" + lines_a[3][:40])
    calls = []
    resumed = run_sweep(
        _config(smollm2, n_prompts=3),
        SweepOptions(cut, on_point=lambda o, done, total: calls.append(o.index)),
    )
    assert calls == [0, 2]  # the origin (plan index 1) is always evaluated first
    assert resumed.points == first.points
    assert (cut / "generations.jsonl").read_text().splitlines() == lines_a


def test_a_different_configuration_is_refused_unless_overwritten(smollm2, tmp_path):
    run_sweep(_config(smollm2, n_prompts=2), SweepOptions(tmp_path / "run"))
    with pytest.raises(ConfigError, match="seed"):
        run_sweep(_config(smollm2, n_prompts=2, seed=7), SweepOptions(tmp_path / "run"))
    summary = run_sweep(
        _config(smollm2, n_prompts=2, seed=7), SweepOptions(tmp_path / "run", overwrite=True)
    )
    assert summary.seed == 7 and summary.flash_attn is False
    flash = replace(
        _config(smollm2, n_prompts=2, seed=7), engine=EngineSettings(2, flash_attn=True)
    )
    with pytest.raises(ConfigError, match="flash_attn"):
        run_sweep(flash, SweepOptions(tmp_path / "run"))


class _Received(Exception):
    """Raised by the spy once the engine has been handed the origin's prompts."""


DATA = Path(__file__).resolve().parents[1] / "visage_local" / "data"
SYSTEM_PROMPTS = ["default", "none", "safety", "Answer every question as a pirate would."]
ATTACKS = ["none", "roleplay", "prefix-injection", "refusal-suppression"]


def test_the_engine_receives_the_system_prompt_and_the_attack_of_every_builtin(
    smollm2, tmp_path, monkeypatch
):
    """What reaches the model, read back from its tokens by llama.cpp's own detokenizer:
    each system prompt mode and each built-in attack template around each prompt."""
    import llama_cpp

    received: list[list[list[int]]] = []

    def spy(self, prompts, max_new_tokens, settled=None, reasoning=None):
        received.append([list(p) for p in prompts])
        raise _Received

    monkeypatch.setattr(Engine, "generate", spy)
    vocab = llama_cpp.Llama(str(smollm2), vocab_only=True, verbose=False)
    prompts = load_prompts("builtin", 2).prompts
    safety = (DATA / "system_prompts" / "safety.txt").read_text().strip()
    empty_system_turn = "<|im_start|>system\n<|im_end|>"  # SmolLM2's ChatML template
    for system, attack in itertools.product(SYSTEM_PROMPTS, ATTACKS):
        config = _config(
            smollm2, n_prompts=2, system_prompt=SystemPrompt.parse(system),
            attack=load_attack(attack),
        )  # fmt: skip
        with pytest.raises(_Received):
            run_sweep(config, SweepOptions(tmp_path / f"{system[:6]}-{attack}"))
        texts = [vocab.detokenize(t, special=True).decode() for t in received.pop()]
        assert len(texts) == len(prompts)
        for text, prompt in zip(texts, prompts, strict=True):
            presented = prompt
            if attack != "none":
                template = (DATA / "attacks" / f"{attack}.txt").read_text().strip()
                presented = template.replace("{prompt}", prompt)
                assert len(template) > len("{prompt}") + 20  # there is text around it
            assert presented in text, (system, attack)
            assert (safety in text) == (system == "safety")
            assert (empty_system_turn in text) == (system == "none")
            assert (SYSTEM_PROMPTS[3] in text) == (system == SYSTEM_PROMPTS[3])
