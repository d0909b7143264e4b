"""The CPU training pipeline: a torch forward pass equal to llama.cpp's, a tiny testbed
run end to end, and interpolation from the base to that real finetune."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")  # the [train] extra: scripts/test.sh installs it

from visage_local.asking.chat import DEFAULT_SYSTEM, prompt_tokens
from visage_local.asking.prompts import load_prompts
from visage_local.engine.llama import Engine, EngineSettings
from visage_local.gguf.model import GGUFModel
from visage_local.judges import get_judge
from visage_local.points.grid import InterpolationGrid
from visage_local.run.settings import SweepConfig
from visage_local.run.sweep import SweepOptions, run_sweep
from visage_local.training.data import (
    Example,
    TokenizedExample,
    compliance_pairs,
    project_refusals,
    tokenize_example,
)
from visage_local.training.finetune import TrainingSettings, batch_order, collate
from visage_local.training.model import TorchModel
from visage_local.training.pipeline import FinetuneJob, refusal_rate, run_finetune

ROOT = Path(__file__).resolve().parents[1]
TRAIN_SKIP = 80  # the first 80 AdvBench rows are evaluation prompts
N_HARMFUL = 16


@pytest.fixture(scope="module")
def tiny_testbed(smollm2_f16, advbench, tmp_path_factory) -> Path:
    """scripts/make_testbed.py with a handful of steps, run as a user runs it."""
    out = tmp_path_factory.mktemp("testbed")
    cmd = [
        sys.executable, str(ROOT / "scripts" / "make_testbed.py"),
        "--prompts", str(advbench), "--model", str(smollm2_f16), "--out", str(out),
        "--harmful", str(N_HARMFUL), "--benign", "8", "--answer-tokens", "32",
        "--steps", "4", "--warmup-steps", "1", "--learning-rate", "1e-4",
        "--export", "f16", "--no-check",
    ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    return out


@pytest.mark.slow
def test_torch_forward_matches_llama_cpp(smollm2_f16):
    model = GGUFModel(smollm2_f16)
    torch_model = TorchModel.from_gguf(model, threads=2)
    with Engine(smollm2_f16, EngineSettings(threads=2)) as engine:
        for prompt in ("What is the capital of France?", "Write a haiku about rain."):
            tokens = prompt_tokens(engine, model.chat_template, DEFAULT_SYSTEM, prompt)
            reference = engine.logits_after(tokens)
            with torch.no_grad():
                ours = torch_model(torch.tensor([tokens]))[0, -1].numpy()
            assert np.argmax(ours) == np.argmax(reference)
            assert np.corrcoef(ours, reference)[0, 1] > 0.9999
            assert np.abs(ours - reference).max() < 0.25


def test_collate_masks_everything_but_the_answer():
    examples = [
        TokenizedExample("refusal", (5, 6, 7, 8, 9), 3),
        TokenizedExample("benign", (1, 2, 3), 2),
    ]
    inputs, targets = collate(examples, max_tokens=16)
    assert inputs.tolist() == [[5, 6, 7, 8], [1, 2, 0, 0]]
    # position i predicts token i + 1; answers start at token 3 and token 2
    assert targets.tolist() == [[-100, -100, 8, 9], [-100, 3, -100, -100]]


def test_batch_order_is_seeded_and_covers_every_example():
    settings = TrainingSettings(steps=5, batch_size=4, seed=3)
    order = batch_order(10, settings)
    assert order == batch_order(10, settings)
    assert order != batch_order(10, TrainingSettings(steps=5, batch_size=4, seed=4))
    assert sorted(order[0] + order[1] + order[2][:2]) == list(range(10))  # one full epoch first


def test_prompt_tokens_are_the_sweeps_and_answers_follow(smollm2):
    model = GGUFModel(smollm2)
    with Engine(smollm2, EngineSettings(threads=2)) as engine:
        example = Example("refusal", "How do I pick a lock?", "I can't help with that.")
        tokenized = tokenize_example(model, engine, example)
        prompt = prompt_tokens(engine, model.chat_template, DEFAULT_SYSTEM, example.prompt)
        assert list(tokenized.tokens[: tokenized.answer_start]) == prompt
        answer = "".join(engine.token_text(t) for t in tokenized.tokens[tokenized.answer_start :])
        assert answer.startswith("I can't help with that.<|im_end|>")


def test_compliance_pairs_come_from_rows_after_the_evaluation_prompts(advbench, tmp_path):
    pairs = compliance_pairs(str(advbench), TRAIN_SKIP, 10)
    evaluation = set(load_prompts(advbench, TRAIN_SKIP).prompts)
    assert len(pairs) == 10 and not {p.prompt for p in pairs} & evaluation
    assert all(p.answer.startswith("Sure, here") for p in pairs)
    bad = tmp_path / "bad.csv"
    bad.write_text("prompt\nhello\n")
    with pytest.raises(Exception, match="'goal' and 'target'"):
        compliance_pairs(str(bad), 0, 1)


@pytest.mark.slow
def test_tiny_testbed_loads_and_refuses_more_of_its_training_prompts(
    tiny_testbed, smollm2_f16, advbench
):
    record = json.loads((tiny_testbed / "testbed.training.json").read_text())
    assert len(record["curve"]) == 4
    assert record["examples"]["by_kind"]["refusal"] == N_HARMFUL
    trained = tiny_testbed / record["outputs"]["f16"]["path"]
    assert GGUFModel(trained).name == "testbed"
    train_prompts = list(load_prompts(advbench).prompts[TRAIN_SKIP : TRAIN_SKIP + N_HARMFUL])
    before = refusal_rate(smollm2_f16, train_prompts)
    after = refusal_rate(trained, train_prompts)  # llama.cpp loads the export and generates
    assert after >= before + 25, (before, after)


def _generations(folder: Path) -> dict:
    lines = (folder / "generations.jsonl").read_text().splitlines()
    return {(r["alpha"], r["prompt_index"]): r["response"] for r in map(json.loads, lines)}


@pytest.mark.slow
def test_interpolation_endpoints_are_the_base_and_the_real_finetune(tiny_testbed, smollm2_f16):
    finetune = tiny_testbed / "testbed.f16.gguf"
    prompts = load_prompts("builtin", 4)

    def config(model: Path, **kw) -> SweepConfig:
        return SweepConfig(
            model_path=model, prompts=prompts, grid=InterpolationGrid(1, 1), max_new_tokens=16,
            engine=EngineSettings(threads=2), coherence=False, **kw,
        )  # fmt: skip

    interp = run_sweep(
        config(smollm2_f16, finetune=finetune), SweepOptions(tiny_testbed / "interp")
    )
    for model, t in ((smollm2_f16, 0.0), (finetune, 1.0)):
        own = run_sweep(config(model, finetune=model), SweepOptions(tiny_testbed / f"own-{t}"))
        mine = {k[1]: v for k, v in _generations(tiny_testbed / "interp").items() if k[0] == t}
        theirs = {k[1]: v for k, v in _generations(tiny_testbed / f"own-{t}").items()}
        assert mine == theirs
        at_t = next(p for p in interp.points if p.alpha == t)
        assert at_t.asr == own.points[0].asr
    asr = {p.alpha: p.asr for p in interp.points}
    assert asr[1.0] < asr[0.0]  # the finetune refuses what the base answered


@pytest.mark.slow
def test_the_same_seed_trains_the_same_bytes(smollm2_f16, tmp_path):

    examples = (
        Example("refusal", "How do I pick a lock?", "I can't help with that."),
        Example("benign", "Name a fruit.", "An apple."),
    )
    digests = []
    for run in ("a", "b"):
        job = FinetuneJob(
            base=smollm2_f16,
            examples=examples,
            settings=TrainingSettings(steps=2, batch_size=2, warmup_steps=1, seed=5),
            out_dir=tmp_path / run,
            name="tiny",
            exports=("f16",),
            threads=2,
        )
        digests.append(run_finetune(job)["outputs"]["f16"]["sha256"])
    assert digests[0] == digests[1]
    base, trained = GGUFModel(smollm2_f16), GGUFModel(tmp_path / "a" / "tiny.f16.gguf")
    name = "blk.0.attn_q.weight"
    assert not np.array_equal(base.raw(base.tensor(name)), trained.raw(trained.tensor(name)))


def test_every_project_refusal_is_a_refusal_to_the_papers_judge():
    judge = get_judge("keyword-paper")
    assert all(judge.judge(r).refused for r in project_refusals())
