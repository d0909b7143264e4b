"""The capability landscape: KL from the origin, multiple-choice accuracy read from letter
logits, perplexity, each checked against llama-cpp-python's own logits."""

from __future__ import annotations

import json

import llama_cpp
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import llama_cpp_greedy

from visage_local.analysis.landscape import draw_capability
from visage_local.asking.chat import DEFAULT_SYSTEM, prompt_tokens, render_chat
from visage_local.asking.prompts import builtin_benign, load_prompts
from visage_local.cli.main import main
from visage_local.engine.capability import (
    CapabilityProbe,
    CapabilitySettings,
    QuestionSet,
    builtin_questions,
    letter_tokens,
    parse_questions,
    perplexity,
)
from visage_local.engine.llama import Engine, EngineSettings
from visage_local.errors import ConfigError
from visage_local.gguf.model import GGUFModel
from visage_local.points.grid import Grid
from visage_local.reading.compare import compare_runs
from visage_local.reading.report import render_report
from visage_local.record import RunSummary
from visage_local.run.settings import SweepConfig
from visage_local.run.sweep import SweepOptions, run_sweep
from visage_local.weights.directions import RandomDirection
from visage_local.weights.perturb import Perturbation, Point, export_perturbed

TEXT = (
    "The river rises in the hills and runs west through farmland for ninety miles. "
    "In spring the snow melts and the water climbs over its banks, so the towns along "
    "it built their houses on higher ground. Fishermen still use small wooden boats, "
    "and every summer the villages hold a race from the old bridge to the mill."
)


def test_builtin_questions_cover_five_subjects_with_balanced_answers():
    questions = builtin_questions().questions
    assert len(questions) >= 100
    assert len({q.subject for q in questions}) >= 5
    counts = [sum(q.answer == letter for q in questions) for letter in "ABCD"]
    assert max(counts) - min(counts) <= 2
    assert len({q.question for q in questions}) == len(questions)


def test_question_files_with_errors_name_the_problem():
    good = parse_questions("question,A,B,C,D,answer\nOne?,a,b,c,d,b\n", "f.csv")
    assert good.questions[0].answer == "B" and good.questions[0].subject == "unspecified"
    with pytest.raises(ConfigError, match="missing column"):
        parse_questions("question,A,B,C,answer\nOne?,a,b,c,A\n", "f.csv")
    with pytest.raises(ConfigError, match="line 3: answer must be"):
        parse_questions("question,A,B,C,D,answer\nOne?,a,b,c,d,A\nTwo?,a,b,c,d,E\n", "f.csv")
    with pytest.raises(ConfigError, match="line 2: empty"):
        parse_questions("question,A,B,C,D,answer\nOne?,a,,c,d,A\n", "f.csv")


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float64)
    top = logits.max(axis=-1, keepdims=True)
    return logits - top - np.log(np.exp(logits - top).sum(axis=-1, keepdims=True))


def every_subject() -> QuestionSet:
    """Six of the 102 built-in questions, one of each subject (each question costs a
    prefill at every point)."""
    builtin = builtin_questions()
    return QuestionSet(builtin.source, builtin.questions[::20])


@pytest.fixture(scope="module")
def reference_llama(smollm2):
    return llama_cpp.Llama(str(smollm2), n_ctx=1024, logits_all=True, verbose=False, n_threads=2)


@pytest.mark.slow
def test_continuation_log_probs_equal_llama_cpp_pythons(smollm2, reference_llama, rounding_spread):
    """Alone, the log-probabilities are llama-cpp-python's; two sequences together round
    differently, each log-probability by at most twice llama.cpp's spread (the logit and
    the log-sum-exp may each move by it)."""
    model = GGUFModel(smollm2)
    with Engine(smollm2, EngineSettings(threads=2)) as engine:
        prompts = [
            engine.tokenize(render_chat(model.chat_template, [{"role": "user", "content": p}]))
            for p in ("Name a colour.", "What is two plus two?")
        ]
        continuations = [engine.tokenize("Blue is a colour"), engine.tokenize("Four")]
        together = engine.continuation_log_probs(prompts, continuations, 8)
        alone = [
            engine.continuation_log_probs([p], [c], 8)[0]
            for p, c in zip(prompts, continuations, strict=True)
        ]
    for prompt, cont, one, both in zip(prompts, continuations, alone, together, strict=True):
        reference_llama.reset()
        reference_llama.eval(prompt + cont)
        scores = np.asarray(reference_llama.scores[: len(prompt) + len(cont)])
        want = _log_softmax(scores[len(prompt) - 1 : len(prompt) - 1 + len(cont)])
        assert one.shape == both.shape == want.shape
        np.testing.assert_allclose(one, want, rtol=0, atol=1e-5)  # float32 of the same values
        assert np.abs(both - want).max() <= 2 * rounding_spread


@pytest.mark.slow
def test_mcq_answers_read_from_logits_match_a_direct_check(
    smollm2, reference_llama, rounding_spread
):
    model = GGUFModel(smollm2)
    questions = every_subject().questions
    with Engine(smollm2, EngineSettings(threads=2)) as engine:
        letters = letter_tokens(engine)
        prompts = [
            engine.tokenize(
                render_chat(model.chat_template, [{"role": "user", "content": q.prompt()}])
            )
            for q in questions
        ]
        ours = engine.next_token_logits(prompts, letters)  # all questions in one batch
    for prompt, row in zip(prompts, ours, strict=True):
        reference_llama.reset()
        reference_llama.eval(prompt)
        direct = np.asarray(reference_llama.scores[len(prompt) - 1])[letters]
        assert np.abs(row - direct).max() <= rounding_spread  # batched: llama.cpp's rounding
        assert direct.max() - direct[np.argmax(row)] < 2 * rounding_spread  # a tie at most


@pytest.mark.slow
def test_perplexity_equals_a_plain_loop_over_llama_cpp_python_logits(smollm2, reference_llama):
    with Engine(smollm2, EngineSettings(threads=2)) as engine:
        tokens = engine.tokenize(TEXT)
        ours = perplexity(engine, tokens)
        windowed = perplexity(engine, tokens, window=20)
    assert len(tokens) > 40

    def plain(window: int) -> float:
        nll, count = 0.0, 0
        for start in range(0, len(tokens), window):
            part = tokens[start : start + window]
            if len(part) < 2:
                continue
            reference_llama.reset()
            reference_llama.eval(part)
            log_probs = _log_softmax(np.asarray(reference_llama.scores[: len(part)]))
            for i in range(1, len(part)):
                nll -= log_probs[i - 1, part[i]]
                count += 1
        return float(np.exp(nll / count))

    # one window a call, one sequence: llama-cpp-python's own evaluation, to rounding
    assert ours == pytest.approx(plain(512), rel=1e-9)
    assert windowed == pytest.approx(plain(20), rel=1e-9)
    assert windowed > ours  # less context, worse prediction


@pytest.mark.slow
def test_kl_is_zero_at_the_origin_and_grows_with_alpha(smollm2, tmp_path):
    text = tmp_path / "text.txt"
    text.write_text(TEXT)
    six = every_subject()
    capability = CapabilitySettings(kl_prompts=4, kl_tokens=8, questions=six, text_path=text)
    config = SweepConfig(
        model_path=smollm2, prompts=load_prompts("builtin", 2), grid=Grid(1, 4, 0.2),
        max_new_tokens=8, engine=EngineSettings(threads=2), coherence=False, capability=capability,
    )  # fmt: skip
    summary = run_sweep(config, SweepOptions(tmp_path / "run"))
    kl = {p.alpha: p.kl for p in summary.points}
    assert kl[0.0] == 0.0
    assert 0 < kl[0.1] < kl[0.2] and 0 < kl[-0.1] < kl[-0.2]
    ppl = {p.alpha: p.perplexity for p in summary.points}
    assert ppl[0.2] > ppl[0.0]
    assert all(0 <= p.mcq_accuracy <= 100 for p in summary.points)
    assert summary.capability["n_questions"] == len(six.questions) == 6
    header = (tmp_path / "run" / "landscape.csv").read_text().splitlines()[0]
    assert "kl,mcq_accuracy,perplexity" in header
    assert (tmp_path / "run" / "capability.png").read_bytes()[:4] == b"\x89PNG"
    records = [json.loads(x) for x in (tmp_path / "run" / "points.jsonl").read_text().splitlines()]
    assert all(r["capability"]["kl"] == kl[r["alpha"]] for r in records)
    (row,), _ = compare_runs([tmp_path / "run"])
    assert row.origin_mcq_accuracy == summary.points[2].mcq_accuracy
    assert row.mean_kl == pytest.approx(sum(kl.values()) / len(kl))
    report = render_report(tmp_path / "run")
    assert "MCQ accuracy %" in report and 'alt="safety and capability"' in report


# One sequence at a time, the probe's log-probabilities are llama-cpp-python's to float32
# rounding (test_continuation_log_probs_equal_llama_cpp_pythons: 1e-5); KL(p || q) =
# sum p (log p - log q) then moves by at most twice that.
KL_TOLERANCE = 2 * 1e-5


@pytest.mark.slow
def test_kl_at_a_perturbed_point_equals_llama_cpp_python_on_the_exported_file(smollm2, tmp_path):
    """The sweep's KL at a = 0.1 against KL computed here from llama-cpp-python's logits:
    the origin file and the point exported as a GGUF, along the origin's greedy answers."""
    one_question = parse_questions("question,A,B,C,D,answer\n2+2?,1,2,3,4,D\n", "one")
    settings = CapabilitySettings(kl_prompts=3, kl_tokens=8, questions=one_question)
    config = SweepConfig(
        model_path=smollm2, prompts=load_prompts("builtin", 1), grid=Grid(1, 2, 0.1),
        max_new_tokens=4, engine=EngineSettings(threads=2, max_sequences=1), coherence=False,
        capability=settings,
    )  # fmt: skip
    summary = run_sweep(config, SweepOptions(tmp_path / "run"))
    kl = {p.alpha: p.kl for p in summary.points}
    exported = export_perturbed(
        Perturbation(GGUFModel(smollm2), [RandomDirection(config.seed)], threads=2),
        Point(0.1), tmp_path / "a0.1.gguf",
    )  # fmt: skip
    origin = llama_cpp.Llama(str(smollm2), n_ctx=512, logits_all=True, verbose=False, n_threads=2)
    moved = llama_cpp.Llama(str(exported), n_ctx=512, logits_all=True, verbose=False, n_threads=2)
    texts = builtin_benign().prompts[: settings.kl_prompts]
    with Engine(smollm2, EngineSettings(threads=2)) as engine:  # the prompts as a sweep sends them
        template = GGUFModel(smollm2).chat_template
        prompts = [prompt_tokens(engine, template, DEFAULT_SYSTEM, t) for t in texts]
    eog = origin.token_eos()
    per_prompt = []
    for prompt in prompts:
        answer = llama_cpp_greedy(origin, prompt, settings.kl_tokens) or [eog]
        rows = slice(len(prompt) - 1, len(prompt) - 1 + len(answer))
        log_probs = []
        for llm in (origin, moved):
            llm.reset()
            llm.eval(prompt + answer)
            log_probs.append(
                _log_softmax(np.asarray(llm.scores[: len(prompt) + len(answer)])[rows])
            )
        p, q = log_probs
        per_prompt.append(float((np.exp(p) * (p - q)).sum(axis=1).mean()))
    assert kl[0.0] == 0.0 and kl[0.1] > 10 * KL_TOLERANCE  # a real distance to compare
    assert kl[0.1] == pytest.approx(float(np.mean(per_prompt)), abs=KL_TOLERANCE)


@pytest.mark.slow
def test_the_probe_at_the_origin_repeats_itself(smollm2):
    model = GGUFModel(smollm2)
    with Engine(smollm2, EngineSettings(threads=2)) as engine:
        settings = CapabilitySettings(kl_prompts=3, kl_tokens=4, questions=every_subject())
        probe = CapabilityProbe(settings, model, engine)
        with pytest.raises(RuntimeError):
            probe.measure()
        probe.calibrate()
        first, second = probe.measure(), probe.measure()
    assert first == second and first["kl"] == 0.0 and first["perplexity"] is None


def test_capability_options_need_capability_and_bad_files_exit_cleanly(tmp_path):
    result = CliRunner().invoke(main, ["sweep", "--mcq", str(tmp_path / "q.csv")])
    assert result.exit_code == 2 and "--mcq needs --capability" in result.output
    bad = tmp_path / "q.csv"
    bad.write_text("question,A,B\nx,y,z\n")
    result = CliRunner().invoke(main, ["sweep", "--capability", "--mcq", str(bad)])
    assert result.exit_code != 0 and "missing column" in result.output
    assert "Traceback" not in result.output


def test_the_2d_capability_figure_puts_three_surfaces_side_by_side(tmp_path):
    axis = [-0.1, 0.0, 0.1]
    points = [
        {"alpha": a, "beta": b, "on_grid": True, "asr": 50 + 100 * a, "kl": a * a + b * b,
         "mcq_accuracy": 30 - 10 * abs(b), "perplexity": None}
        for b in axis
        for a in axis
    ]  # fmt: skip
    summary = {
        "model_name": "m",
        "dims": 2,
        "seed": 0,
        "n_prompts": 1,
        "judge": "keyword-paper",
        "axes": {"alpha": axis, "beta": axis},
        "points": points,
    }
    draw_capability(RunSummary.from_dict(summary), tmp_path / "capability.png")
    assert (tmp_path / "capability.png").read_bytes()[:4] == b"\x89PNG"
    summary["points"] = [{**p, "mcq_accuracy": None} for p in points]  # no capability measured
    draw_capability(RunSummary.from_dict(summary), tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()
