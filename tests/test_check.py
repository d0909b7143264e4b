"""``visage-local check``: thresholds either side of a measured value, and the exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from visage_local.cli.main import main
from visage_local.workflows.check import FAIL, PASS, UNCERTAIN, Threshold

pytestmark = pytest.mark.slow

SMALL = ["--limit", "6", "--max-new-tokens", "8", "--threads", "2"]


def check(*args) -> tuple[int, str]:
    """Exit code and output (stdout alone with --json: the notes go to stderr)."""
    result = CliRunner().invoke(main, ["check", *map(str, args)])
    return result.exit_code, result.stdout if "--json" in args else result.output


def folder_of(out) -> Path:
    """The one keyed sub-folder of a check's --out."""
    (folder,) = [p for p in Path(out).iterdir() if p.is_dir()]
    return folder


@pytest.fixture(scope="module")
def measured(qwen, tmp_path_factory) -> tuple[dict, str]:
    """Qwen's origin ASR and its interval, from one check (JSON); its folder, which the
    other checks resume from without generating again."""
    out = tmp_path_factory.mktemp("check") / "qwen"
    code, output = check(qwen, "--max-asr", "100", "--out", out, "--json", *SMALL)
    assert code == 0, output
    document = json.loads(output)
    return document["thresholds"][0], str(out)


def test_thresholds_either_side_of_the_measured_asr(qwen, measured):
    origin, out = measured
    low, high = origin["interval"]
    assert origin["name"] == "origin ASR" and low < origin["measured"] < high
    assert check(qwen, "--max-asr", high + 1, "--out", out, *SMALL)[0] == 0
    code, output = check(qwen, "--max-asr", max(0, low - 1), "--out", out, *SMALL)
    assert code == 3 and "check FAILED" in output and f"{origin['measured']:.1f}" in output


def test_a_limit_inside_the_interval_fails_unless_lenient(qwen, measured):
    origin, out = measured
    above = (origin["measured"] + origin["interval"][1]) / 2  # inside, above the value
    code, output = check(qwen, "--max-asr", above, "--out", out, *SMALL)
    assert code == 3 and "uncertain: the limit is inside the 95% interval" in output
    code, output = check(qwen, "--max-asr", above, "--lenient", "--out", out, *SMALL)
    assert code == 0 and "passes on its value (--lenient)" in output and "fails" not in output
    below = (origin["measured"] + origin["interval"][0]) / 2  # inside, below the value
    assert check(qwen, "--max-asr", below, "--lenient", "--out", out, *SMALL)[0] == 3


def test_breaking_t_against_a_broken_finetune(qwen, tmp_path):
    """A 'finetune' that is Qwen with layers 10-19 moved far along a random direction leaves
    Qwen's basin before t = 1: a limit of 1 fails, a limit of 0 passes."""
    broken = tmp_path / "broken.gguf"
    args = ["perturb", str(qwen), "--alpha", "1.0", "--include", "blk.1[0-9].*"]
    made = CliRunner().invoke(main, [*args, "-o", str(broken)])
    assert made.exit_code == 0
    args = ["--base", qwen, "--interpolation-steps", "1", "--out", tmp_path / "c", *SMALL]
    code, output = check(broken, "--min-breaking-t", 1.0, "--json", *args)
    document = json.loads(output)
    (threshold,) = document["thresholds"]
    assert code == 3 and threshold["measured"] < 1.0 and threshold["verdict"] == FAIL
    assert check(broken, "--min-breaking-t", 0.0, *args)[0] == 0


def test_the_engine_options_reach_the_checks_runs(qwen, measured, tmp_path):
    """--n-gpu-layers auto is every layer where llama.cpp was built with a GPU backend and
    none where not (llama-cpp-python asked directly); check records what it resolved to,
    and its runs use --flash-attn as sweep's do. A bad value is one line."""
    import llama_cpp

    out = tmp_path / "c"
    code, output = check(qwen, "--max-asr", 100, "--n-gpu-layers", "auto", "--flash-attn",
                         "--out", out, *SMALL)  # fmt: skip
    assert code == 0, output
    layers = 999 if llama_cpp.llama_supports_gpu_offload() else 0
    folder = folder_of(out)
    assert f"n-gpu-layers = {layers}\n" in (folder / "config.toml").read_text()
    assert json.loads((folder / "origin" / "summary.json").read_text())["flash_attn"] is True
    code, output = check(qwen, "--max-asr", 100, "--n-gpu-layers", "many", "--out", out)
    assert code == 2 and "'many' is neither a number of layers nor 'auto'" in output
    origin_run = str(folder_of(measured[1]) / "origin")
    rejudged = CliRunner().invoke(
        main, ["rejudge", origin_run, "--judge", "keyword", "--n-gpu-layers", "1"]
    )
    assert rejudged.exit_code == 2 and "--n-gpu-layers is for --complete" in rejudged.output


def test_usage_errors_are_one_line_exit_2(qwen, tmp_path):
    code, output = check(qwen, "--out", tmp_path)
    assert code == 2 and output.startswith("error: nothing to check")
    code, output = check(qwen, "--min-breaking-t", 0.5, "--out", tmp_path)
    assert code == 2 and "--base and --min-breaking-t go together" in output
    code, output = check(qwen, "--max-asr", 120)
    assert code == 2 and "Traceback" not in output
    code, output = check(qwen, "--max-asr", 50, "--benign-prompts", tmp_path / "x.txt")
    assert code == 2 and "--benign-prompts is read for --max-benign-refusal" in output


def test_min_visage_gates_on_the_mean_of_several_directions(smollm2, tmp_path):
    """--min-visage sweeps --directions landscapes and gates on their mean, with the two-level
    interval recomputed here from each direction's stored verdicts; SmolLM2 refuses almost
    nothing, so a limit above its VISAGE fails."""
    import numpy as np

    from visage_local import stats
    from visage_local.analysis.landscape import grid_refusals
    from visage_local.record import RunFolder

    out = tmp_path / "c"
    args = ["--directions", "2", "--steps", "2", "--limit", "3", "--max-new-tokens", "4"]
    code, output = check(smollm2, "--min-visage", 90, "--json", "--out", out, *args)
    (threshold,) = json.loads(output)["thresholds"]
    folders = [RunFolder(folder_of(out) / "landscape" / f"direction-{k}") for k in (0, 1)]
    summaries = [f.read_summary() for f in folders]
    assert summaries[0].directions != summaries[1].directions
    assert threshold["measured"] == pytest.approx(np.mean([s.visage for s in summaries]))
    refusals = [
        grid_refusals(s, f.read_generations()) for s, f in zip(summaries, folders, strict=True)
    ]
    assert threshold["interval"] == list(stats.bootstrap_across_directions(refusals, 1, 123))
    assert code == 3 and threshold["verdict"] == FAIL and "2 directions" in threshold["note"]


def test_a_check_runs_again_on_a_new_model_file_and_a_new_threshold(qwen, measured, tmp_path):
    """A new version of the model is a new sub-folder beside the old one; a new threshold on
    the same model reuses its runs (nothing generated again); both folders stay valid, each
    with the config.toml and check.json of its own run; the JSON names the model as typed,
    its file and its full sha256."""
    from visage_local.gguf.model import GGUFModel

    out = tmp_path / "c"
    code, output = check(qwen, "--max-asr", 100, "--json", "--out", out, *SMALL)
    assert code == 0, output
    first = folder_of(out)
    document = json.loads(output)
    assert document["model"] == {
        "spec": str(qwen), "file": str(qwen.resolve()), "sha256": GGUFModel(qwen).sha256
    }  # fmt: skip
    assert document["folder"] == str(first) and document["format_version"] == 2
    assert document["settings"]["n_prompts"] == 6 and document["verdict"].startswith("verdict:")
    stamp = (first / "origin" / "generations.jsonl").stat().st_mtime_ns
    code, output = check(qwen, "--max-asr", 0, "--out", out, *SMALL)  # another threshold
    assert code == 3 and f"runs in {first}" in output
    assert (first / "origin" / "generations.jsonl").stat().st_mtime_ns == stamp
    assert json.loads((first / "check.json").read_text())["thresholds"][0]["limit"] == 0
    newer = tmp_path / "newer.gguf"  # a new release of the same model: other weights
    made = CliRunner().invoke(main, ["perturb", str(qwen), "--alpha", "0.01", "-o", str(newer)])
    assert made.exit_code == 0
    code, output = check(newer, "--max-asr", 100, "--out", out, *SMALL)
    assert code == 0, output
    folders = sorted(p for p in out.iterdir() if p.is_dir())
    assert len(folders) == 2 and first in folders
    # report and compare read a check's folder: every run in it
    compared = CliRunner().invoke(main, ["compare", str(out), "--json"])
    assert compared.exit_code == 0, compared.output
    assert [r["run"] for r in json.loads(compared.stdout)["runs"]] == [
        str(f / "origin") for f in folders
    ]
    card = CliRunner().invoke(main, ["report", str(first), "--format", "markdown"])
    assert card.exit_code == 0, card.output
    assert "| origin ASR (<= 0: fail) |" in card.output
    assert json.loads((first / "check.json").read_text())["verdict"] in card.output
    assert "visage-local check --config config.toml" in card.output
    reported = CliRunner().invoke(main, ["report", str(out)])
    assert reported.exit_code == 0, reported.output
    assert all((f / "origin" / "report.html").is_file() for f in folders)
    for folder in folders:
        summary = json.loads((folder / "origin" / "summary.json").read_text())
        assert folder.name.startswith(summary["model_sha256"][:12])
        assert summary["complete"] and (folder / "config.toml").is_file()
        assert (
            f'model = "{Path(summary["model"]).resolve()}"' in (folder / "config.toml").read_text()
        )


def test_a_refused_run_writes_nothing(qwen, measured, tmp_path):
    """When a run in the check's folder refuses to resume (here: made with other package
    versions), the check stops with one line and leaves the folder's files as they were."""
    from visage_local.record.writer import config_hash

    out = tmp_path / "c"
    assert check(qwen, "--max-asr", 100, "--out", out, *SMALL)[0] == 0
    folder = folder_of(out)
    (folder / "config.toml").unlink()
    stored = json.loads((folder / "origin" / "config.json").read_text())
    stored["config"]["versions"]["numpy"] = "0.0"
    stored["hash"] = config_hash(stored["config"])
    (folder / "origin" / "config.json").write_text(json.dumps(stored))
    code, output = check(qwen, "--max-asr", 50, "--out", out, *SMALL)
    import numpy

    # the setting that differs, down to the nested value, with its old and new values
    assert code == 2 and f'versions.numpy "0.0" -> "{numpy.__version__}"' in output
    assert "--overwrite" in output
    assert not (folder / "config.toml").exists()
    assert json.loads((folder / "check.json").read_text())["thresholds"][0]["limit"] == 100
    assert check(qwen, "--max-asr", 50, "--overwrite", "--out", out, *SMALL)[0] in (0, 3)
    assert (folder / "config.toml").is_file()


@pytest.mark.parametrize(
    ("measured", "interval", "verdict", "lenient"),
    [
        (20.0, (10.0, 30.0), UNCERTAIN, True),  # limit 25 inside, the value below it
        (28.0, (20.0, 36.0), UNCERTAIN, False),
        (10.0, (5.0, 20.0), PASS, True),
        (40.0, (30.0, 50.0), FAIL, False),
        (None, None, FAIL, False),
    ],
)
def test_threshold_verdicts(measured, interval, verdict, lenient):
    threshold = Threshold("origin ASR", 25.0, True, measured, interval)
    assert threshold.verdict == verdict
    assert threshold.passes(lenient=True) == lenient
    assert threshold.passes(lenient=False) == (verdict == PASS)
