"""``visage-local screen``: many models, stage by stage, ranked, resumable."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import unquote

import pytest
from click.testing import CliRunner

from visage_local import synthetic
from visage_local.asking.prompts import builtin_benign
from visage_local.cli.main import main
from visage_local.engine.quantize import quantize_model
from visage_local.workflows.screen import ScreenRow, rank

pytestmark = pytest.mark.slow

TINY = ["--limit", "3", "--max-new-tokens", "3", "--threads", "2"]
BENIGN = builtin_benign().prompts


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> Path:
    """Three small random-weight models of three architectures, in one folder."""
    folder = tmp_path_factory.mktemp("tiny-models")
    for arch in ("qwen3", "llama3", "gemma3"):
        source = synthetic.write_model(folder / f"{arch}.f16", arch)
        quantize_model(source, folder / f"{arch}.Q4_K_M.gguf", "Q4_K_M")
        source.unlink()
    return folder


def test_ranking_is_by_visage_then_origin_asr_failures_last():
    def row(name, visage=None, asr=None, error=None):
        return ScreenRow(name, name, name, "0" * 64, "", origin_asr=asr, visage=visage, error=error)

    rows = [row("e", error="x"), row("d", None, 10.0), row("c", 50.0, 90.0),
            row("b", 80.0, 40.0), row("a", 50.0, 20.0)]  # fmt: skip
    assert [r.spec for r in rank(rows)] == ["b", "a", "c", "d", "e"]


def test_the_base_ranks_as_a_model_that_never_left_its_basin():
    def row(name, distance=None, base=False, never=None):
        return ScreenRow(name, name, name, "0" * 64, "", base=base, origin_asr=0.0,
                         breaking_distance=distance, never_left=never)  # fmt: skip

    rows = rank([row("far", 0.2, never=False), row("near", 0.1, never=False),
                 row("base", base=True), row("kept", never=True)])  # fmt: skip
    assert [r.spec for r in rows][:2] in (["base", "kept"], ["kept", "base"])
    assert [r.spec for r in rows][2:] == ["far", "near"]


def test_models_whose_intervals_overlap_share_ranks():
    def row(name, visage=None, ci=None, asr=None, asr_ci=None):
        return ScreenRow(name, name, name, "0" * 64, "", origin_asr=asr, origin_asr_ci=asr_ci,
                         visage=visage, visage_ci=ci)  # fmt: skip

    rows = rank([
        row("a", 60.0, [50.0, 70.0]), row("b", 55.0, [45.0, 65.0]),  # overlap: a tie
        row("c", 20.0, [10.0, 30.0]),  # below both
        row("d", asr=10.0, asr_ci=[5.0, 20.0]), row("e", asr=80.0, asr_ci=[70.0, 90.0]),
        row("f", asr=15.0, asr_ci=[8.0, 25.0]),  # no VISAGE: by origin ASR, after the others
    ])  # fmt: skip
    assert [(r.spec, r.rank) for r in rows] == [
        ("a", [1, 2]), ("b", [1, 2]), ("c", [3, 3]), ("d", [4, 5]), ("f", [4, 5]), ("e", [6, 6])
    ]  # fmt: skip


def test_stage_one_ranks_the_aligned_model_first(qwen, tiny_models, tmp_path):
    """Qwen (aligned) against a random-weight model (which refuses nothing)."""
    noise = tiny_models / "llama3.Q4_K_M.gguf"
    out = tmp_path / "screen"
    harmless = tmp_path / "harmless.jsonl"  # 8 of the built-in 60 (64 prompts took 49 s)
    harmless.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in BENIGN[:8]))
    result = CliRunner().invoke(main, ["screen", str(noise), str(qwen), "--out", str(out),
                                       "--limit", "4", "--max-new-tokens", "4", "--json",
                                       "--benign-prompts", str(harmless)])  # fmt: skip
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["format_version"] == 3
    first, second = document["models"]
    assert first["file"] == qwen.name and second["file"] == noise.name
    assert first["origin_asr"] < second["origin_asr"]
    for row in document["models"]:
        summary = json.loads((Path(row["folder"]) / "origin" / "summary.json").read_text())
        assert summary["n_points_evaluated"] == 1 and summary["benign"] == str(harmless)
        lines = (Path(row["folder"]) / "origin" / "generations.jsonl").read_text().splitlines()
        asked = [r["prompt"] for r in map(json.loads, lines) if r["set"] == "benign"]
        assert tuple(asked) == BENIGN[:8]
        assert row["origin_asr"] == summary["origin_asr"]
        assert row["benign_refusal"] == summary["points"][0]["benign_refusal"]
    lines = (out / "screen.csv").read_text().splitlines()
    assert lines[0].startswith("rank,rank_low,rank_high,model,spec,base,sha256,")
    assert lines[1].startswith(f"1,1,2,{qwen.name},{qwen},False,")
    assert first["rank"][0] == 1 and second["rank"][1] == 2


def test_a_killed_screen_resumes_without_redoing_finished_models(tiny_models, tmp_path):
    out = tmp_path / "screen"
    args = [sys.executable, "-m", "visage_local.cli", "screen", str(tiny_models), "--landscape",
            "--steps", "2", "--directions", "2", "--budget-minutes", "30", "--out", str(out),
            *TINY]  # fmt: skip
    child = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    started: list[Path] = []
    # A second model's folder: the first model (in file-name order) is finished.
    while time.monotonic() < deadline and len(started) < 2 and child.poll() is None:
        started = sorted(out.glob("*-*/origin"))
        time.sleep(0.1)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert len(started) >= 2, "the screen never reached its second model"
    finished = started[0].parent
    stamps = {p: p.stat().st_mtime_ns for p in finished.rglob("generations.jsonl")}
    result = CliRunner().invoke(main, args[3:])
    assert result.exit_code == 0, result.output
    assert {p: p.stat().st_mtime_ns for p in finished.rglob("generations.jsonl")} == stamps
    document = json.loads((out / "screen.json").read_text())
    assert len(document["models"]) == 3
    assert all(r["visage"] is not None and r["landscape_complete"] for r in document["models"])


def test_the_base_once_and_a_model_of_another_architecture_skipped(tiny_models, tmp_path):
    """With --base among the models: the base is screened once, marked, and never
    interpolated to itself; its own point (t = 0) is evaluated by the first interpolation
    and taken by the second (the same point record, timings included); a model of another
    architecture is skipped with the reason in its row; --no-benign asks no harmless
    prompts; screen.json carries the settings and full sha256s."""
    from visage_local.gguf.model import GGUFModel

    base = tiny_models / "qwen3.Q4_K_M.gguf"
    moved = tmp_path / "qwen3-moved&<i>.gguf"  # a name the page must escape
    away = tmp_path / "qwen3-away.gguf"
    runner = CliRunner()
    for path, alpha in ((moved, "0.5"), (away, "-0.5")):
        made = runner.invoke(main, ["perturb", str(base), "--alpha", alpha, "-o", str(path)])
        assert made.exit_code == 0
    other = tiny_models / "llama3.Q4_K_M.gguf"
    out = tmp_path / "screen"
    args = ["screen", str(base), str(moved), str(away), str(other), "--base", str(base),
            "--interpolation-steps", "2", "--no-benign", *TINY]  # fmt: skip
    result = runner.invoke(main, [*args, "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    # the estimate of the whole screen comes first, with the stages it runs
    (estimate,) = [line for line in result.stderr.splitlines() if "estimate for" in line]
    assert result.stderr.index(estimate) < result.stderr.index(": stage 1")
    assert "interpolations" in estimate and "landscapes" not in estimate
    document = json.loads(result.stdout)
    rows = {row["file"]: row for row in document["models"]}
    assert sorted(rows) == sorted(p.name for p in (base, moved, away, other))
    assert rows[base.name]["base"] and rows[base.name]["breaking_t"] is None
    assert not (Path(rows[base.name]["folder"]) / "interpolation").exists()
    assert rows[other.name]["error"].startswith("skipped:")
    assert "architecture 'llama' differs" in rows[other.name]["error"]
    assert rows[other.name]["origin_asr"] is None
    assert rows[moved.name]["sha256"] == GGUFModel(moved).sha256
    assert document["settings"]["base"]["spec"] == str(base)
    assert document["settings"]["benign"] is None and document["verdict"].startswith("verdict:")
    first, second = (
        [json.loads(line) for line in (Path(rows[m.name]["folder"]) / "interpolation"
                                       / "points.jsonl").read_text().splitlines()]
        for m in (moved, away)
    )  # fmt: skip
    assert first[0]["alpha"] == second[0]["alpha"] == 0.0
    assert first[0] == second[0]  # taken, not evaluated again
    assert first[1]["displacement"] != second[1]["displacement"]
    for row in rows.values():
        if row["error"] is None:
            summary = json.loads((Path(row["folder"]) / "origin" / "summary.json").read_text())
            assert summary["benign"] is None and set(row["seconds"]) >= {"origin"}
    interpolation = json.loads(
        (Path(rows[moved.name]["folder"]) / "interpolation" / "summary.json").read_text()
    )
    assert interpolation["grid"]["kind"] == "interpolation"
    assert rows[moved.name]["breaking_t"] == interpolation["breaking_t"]
    page = (out / "leaderboard.html").read_text()
    assert "qwen3-moved&amp;&lt;i&gt;.gguf" in page and "<i>" not in page
    assert page.count("data:image/png;base64,") == 1  # the bars; no landscape was measured
    assert "[base]" in page and "ASR</dt>" in page
    links = [unquote(link) for link in re.findall(r'href="([^"]+)"', page)]
    mine = [link for link in links if link.startswith(Path(rows[moved.name]["folder"]).name)]
    assert sorted(mine) == sorted(
        f"{Path(rows[moved.name]['folder']).name}/{stage}/report.html"
        for stage in ("origin", "interpolation")
    )
    assert all((out / link).is_file() for link in links)
    compared = runner.invoke(main, ["compare", str(out), "--json"])  # every run of the screen
    assert compared.exit_code == 0, compared.output
    assert len(json.loads(compared.stdout)["runs"]) == 3 + 2  # three origins, two paths
    result = runner.invoke(main, ["screen", str(other), "--base", str(base), *TINY,
                                  "--out", str(tmp_path / "bad")])  # fmt: skip
    assert result.exit_code == 2 and "architecture 'llama' differs" in result.output
    assert not (tmp_path / "bad").exists()


def test_benign_limit_asks_the_first_harmless_prompts(tiny_models, tmp_path):
    out = tmp_path / "screen"
    model = tiny_models / "qwen3.Q4_K_M.gguf"
    result = CliRunner().invoke(
        main, ["screen", str(model), "--benign-limit", "2", "--out", str(out), *TINY]
    )
    assert result.exit_code == 0, result.output
    (row,) = json.loads((out / "screen.json").read_text())["models"]
    lines = (Path(row["folder"]) / "origin" / "generations.jsonl").read_text().splitlines()
    asked = [r["prompt"] for r in map(json.loads, lines) if r["set"] == "benign"]
    assert tuple(asked) == BENIGN[:2]
    bad = CliRunner().invoke(main, ["screen", str(model), "--no-benign", "--benign-limit", "2"])
    assert bad.exit_code == 2 and "--no-benign" in bad.output
