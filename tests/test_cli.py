"""The command line: inspect, perturb, sweep, and clean errors for bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner
from conftest import metadata_of

from visage_local.cli.main import main
from visage_local.engine.quantize import quantize_model
from visage_local.gguf.model import GGUFModel


def run(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_inspect_reports_types_targets_template_and_sha256(qwen):
    result = run("inspect", qwen, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["architecture"] == "qwen2"
    assert set(report["tensors_by_type"]) == {"Q5_0", "Q4_K", "Q6_K", "Q8_0", "F32"}
    assert report["perturbed_tensors"] + len(report["excluded"]) == report["tensors"]
    assert all("norm" in name for name in report["excluded"])
    assert report["chat_template"] is True
    assert report["sha256"] == "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
    text = run("inspect", qwen)
    assert "perturbed" in text.output and "chat template yes" in text.output


def test_inspect_defaults_to_the_embedded_model():
    result = run("inspect", "--json")
    assert result.exit_code == 0
    assert json.loads(result.output)["architecture"] == "llama"


def test_perturb_writes_a_gguf_with_the_same_header(tiny_gguf, tmp_path):
    out = tmp_path / "p.gguf"
    result = run("perturb", tiny_gguf, "--alpha", "0.1", "--beta", "-0.05", "-o", out)
    assert result.exit_code == 0, result.output
    source, written = GGUFModel(tiny_gguf), GGUFModel(out)
    assert [(t.name, t.qtype, t.shape, t.offset) for t in written.tensors] == [
        (t.name, t.qtype, t.shape, t.offset) for t in source.tensors
    ]
    assert metadata_of(written) == metadata_of(source)
    assert out.read_bytes() != tiny_gguf.read_bytes()


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("inspect", "/nonexistent.gguf"), 2, "no such file"),
        (("sweep", "--steps", "0"), 2, "--steps"),
        (("sweep", "--range", "-1"), 2, "--range"),
        (("sweep", "--dims", "3"), 2, "--dims"),
        (("perturb", "--alpha", "x", "-o", "o.gguf"), 2, "alpha"),
    ],
)
def test_usage_errors_exit_2(args, code, message):
    result = run(*args)
    assert result.exit_code == code
    assert message in result.output
    assert "Traceback" not in result.output


def test_a_file_llama_cpp_cannot_load_is_named_with_llama_cpps_reason(tiny_gguf, tmp_path):
    """tiny.gguf says it is a llama but has no hyperparameters: the error names the user's
    file (not the scratch copy llama.cpp was given) and what llama.cpp missed."""
    result = run("sweep", tiny_gguf, "--steps", "1", "--limit", "1", "--max-new-tokens", "2",
                 "--out", tmp_path / "run")  # fmt: skip
    assert result.exit_code == 1 and "Traceback" not in result.output
    line = result.output.strip().splitlines()[-1]
    assert line.startswith(f"error: {tiny_gguf}: llama.cpp could not load this model (")
    assert "key not found in model: llama.context_length" in line


def test_verbose_shows_llama_cpps_whole_log(tiny_gguf, tmp_path):
    args = ["sweep", tiny_gguf, "--steps", "1", "--limit", "1", "--max-new-tokens", "2"]
    quiet = run(*args, "--out", tmp_path / "a")
    loud = run("-v", *args, "--out", tmp_path / "b")
    assert quiet.exit_code == loud.exit_code == 1
    assert "llama_model_loader: loaded meta data" not in quiet.output
    assert "llama_model_loader: loaded meta data" in loud.output
    assert loud.output.strip().splitlines()[-1] == quiet.output.strip().splitlines()[-1].replace(
        str(tmp_path / "a"), str(tmp_path / "b")
    )


def test_not_a_gguf_and_truncated_gguf_are_one_line_errors(tmp_path, smollm2):
    (tmp_path / "text.gguf").write_text("hello, I am not a model")
    result = run("inspect", tmp_path / "text.gguf")
    assert result.exit_code == 1 and "not a GGUF file" in result.output
    truncated = tmp_path / "cut.gguf"
    truncated.write_bytes(smollm2.read_bytes()[:2_000_000])
    result = run("inspect", truncated)
    assert result.exit_code == 1 and "error:" in result.output
    assert "Traceback" not in result.output


def test_bad_prompt_file_in_sweep_names_the_line(tmp_path):
    bad = tmp_path / "p.jsonl"
    bad.write_text('{"prompt": "ok"}\nnot json\n')
    result = run("sweep", "--prompts", bad, "--out", tmp_path / "run")
    assert result.exit_code == 2 and "line 2" in result.output


def test_installed_console_script_runs_without_a_traceback(tmp_path):
    exe = [sys.executable, "-m", "visage_local.cli"]
    done = subprocess.run(
        [*exe, "inspect", tmp_path / "missing.gguf"], capture_output=True, text=True
    )
    assert done.returncode == 2
    assert done.stderr.strip().startswith("error:") and "Traceback" not in done.stderr


@pytest.mark.slow
def test_sweep_command_prints_a_table_and_writes_the_folder(tmp_path):
    out = tmp_path / "run"
    result = run(
        "sweep", "--steps", "2", "--limit", "3", "--max-new-tokens", "8", "--threads", "2",
        "--out", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "VISAGE" in result.output and "origin ASR" in result.output
    assert "direction cache: " in result.output  # what it chose to keep, from what
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_prompts"] == 3
    # what this run changed from the paper's setting, with both values, stored and printed
    assert summary["deviations"] == [
        {"setting": "prompts", "reference": "advbench, first 80", "value": "advbench, 3"},
        {"setting": "max_new_tokens", "reference": 512, "value": 8},
        {"setting": "steps", "reference": 20, "value": 2},
    ]
    assert (
        "deviations from the reference setting: prompts advbench, 3 (reference advbench, "
        "first 80); max_new_tokens 8 (reference 512); steps 2 (reference 20)" in result.output
    )
    assert run("report", out).exit_code == 0
    assert "max_new_tokens 8 (reference 512)" in (out / "report.html").read_text()
    compared = run("compare", out, "--format", "json").output
    assert json.loads(compared)[0]["deviations"] == "prompts=advbench, 3; max_new_tokens=8; steps=2"
    result = run(
        "sweep", "--steps", "2", "--limit", "3", "--max-new-tokens", "8", "--threads", "2",
        "--flash-attn", "--out", tmp_path / "flash",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "flash" / "summary.json").read_text())["flash_attn"] is True


def test_output_folder_that_cannot_be_created(tmp_path):
    """Said first, in one line: no plan, cache line or progress bar before it."""
    (tmp_path / "file").write_text("x")
    result = run("sweep", "--steps", "2", "--limit", "1", "--out", tmp_path / "file" / "run")
    assert result.exit_code == 2 and result.output.startswith("error: ")
    assert "is a file, not a folder" in result.output and len(result.output.splitlines()) == 1


def test_model_without_chat_template_uses_the_fallback_and_says_so(gemma, tmp_path):
    # one layer moved: Gemma's 262k-token embedding is not what this is about
    result = run(
        "sweep", gemma, "--steps", "1", "--range", "0.01", "--limit", "1",
        "--max-new-tokens", "4", "--include", "blk.0.", "--no-coherence", "--threads", "2",
        "--out", tmp_path / "run",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "no chat template" in result.output
    # two grid points without the origin, which the sweep adds: three evaluated, three said
    assert "3 points x 1 prompts" in result.output
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["chat_template"] == "fallback"


@pytest.mark.slow
def test_report_escapes_markup_from_the_model_file(smollm2, tmp_path):
    # A copy of SmolLM2 whose general.name is markup (same length, so the header stays valid).
    name = b"Smollm2 135M 8k Lc100K Mix1 Ep2"
    hostile = b"<script>alert(1)</script><b>xy!"
    assert len(hostile) == len(name)
    data = smollm2.read_bytes()
    assert data.count(name) == 1
    model = tmp_path / "hostile.gguf"
    model.write_bytes(data.replace(name, hostile))
    out = tmp_path / "run"
    result = run(
        "sweep", model, "--steps", "2", "--limit", "2", "--max-new-tokens", "8",
        "--threads", "2", "--out", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    result = run("report", out)
    assert result.exit_code == 0, result.output
    html = (out / "report.html").read_text()
    assert "<script>" not in html and "<b>xy!" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert html.count("<details>") == 3
    assert html.count("data:image/png;base64,") == 2  # the landscape, and the displacement plot


@pytest.mark.slow
def test_fidelity_on_a_real_q4_model_warns_in_same_mode_and_not_in_f16(smollm2):
    same = run("inspect", smollm2, "--fidelity", "--alpha", "0.05", "--json")
    assert same.exit_code == 0, same.output
    figures = json.loads(same.stdout)
    print("SmolLM2 Q4_1 at alpha 0.05, same:", figures["all"])
    assert figures["all"]["cosine"] < 0.9  # rounding noise dominates the small step
    text = run("inspect", smollm2, "--fidelity", "--alpha", "0.05")
    assert "warning: the applied displacement strays" in text.output
    f16 = json.loads(
        run(
            "inspect", smollm2, "--fidelity", "--alpha", "0.05", "--requant", "f16", "--json"
        ).output
    )
    assert abs(f16["all"]["ratio"] - 1) < 0.01 and abs(f16["all"]["cosine"] - 1) < 0.01
    origin = json.loads(run("inspect", smollm2, "--fidelity", "--alpha", "0", "--json").stdout)
    assert origin["all"] == {"ratio": None, "cosine": None, "distance": None}
    assert figures["all"]["distance"] == pytest.approx(0.05, rel=0.02)  # about |alpha|


def test_every_option_of_every_command_says_what_it_does_and_its_default():
    for name, command in main.commands.items():
        for option in (p for p in command.params if isinstance(p, click.Option)):
            where = f"{name} {option.opts[0]}"
            assert option.help, f"{where} has no help text"
            has_default = not (option.is_flag or option.multiple or option.required)
            has_default = has_default and option.default is not None
            if has_default:
                assert option.show_default or "default" in option.help.lower(), where


def test_sweep_json_is_one_document_on_stdout(tmp_path):
    from visage_local import synthetic

    source = synthetic.write_model(tmp_path / "f16.gguf", "llama3")
    model = quantize_model(source, tmp_path / "model.gguf", "Q4_0")
    args = ["sweep", model, "--limit", "2", "--steps", "2", "--max-new-tokens", "2", "--json"]
    result = run(*args, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert next(iter(document)) == "format_version"
    assert document == json.loads((tmp_path / "run" / "summary.json").read_text())
    assert "sweep" in result.stderr  # the progress bar stays on stderr
