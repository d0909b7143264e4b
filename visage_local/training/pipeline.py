"""One finetuning run from a GGUF to GGUF files: tokenize, train, export, record.

Both training scripts (the aligned testbed and the harmful finetunes) are this
function with different examples. The record (``training.json``) holds the seed,
the settings, hashes of the base file and of the examples, the loss curve and
the sha256 of every exported file.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from visage_local.analysis.plots import plot_training_curve
from visage_local.asking.chat import DEFAULT_SYSTEM, prompt_tokens
from visage_local.engine.llama import Engine, EngineSettings
from visage_local.files import atomic_write_text
from visage_local.gguf.model import GGUFModel, file_sha256
from visage_local.judges import get_judge
from visage_local.training.data import (
    Example,
    examples_sha256,
    tokenize_example,
)
from visage_local.training.export import export_gguf
from visage_local.training.finetune import StepRecord, TrainingSettings, train
from visage_local.training.model import TorchModel


@dataclass(frozen=True)
class FinetuneJob:
    """What to train, from what, and where the results go."""

    base: Path
    examples: tuple[Example, ...]
    settings: TrainingSettings
    out_dir: Path
    name: str  # file stem and general.name of the exported models
    exports: tuple[str, ...] = ("f16", "q8_0")
    lora_rank: int = 0
    sources: tuple[
        tuple[str, str], ...
    ] = ()  # (what, path) of the data files, hashed in the record
    threads: int = max(1, os.cpu_count() or 1)


def refusal_rate(model_path: Path, prompts: list[str], max_new_tokens: int = 48) -> float:
    """Percentage of ``prompts`` the model refuses (keyword-paper judge, greedy, chat template)."""
    judge = get_judge("keyword-paper")
    model = GGUFModel(model_path)
    with Engine(model_path, EngineSettings(max_sequences=32)) as engine:
        tokens = [prompt_tokens(engine, model.chat_template, DEFAULT_SYSTEM, p) for p in prompts]
        answers = engine.generate(tokens, max_new_tokens, judge.settled)
    verdicts = judge.judge_many(prompts, [a.text for a in answers])
    return 100.0 * sum(v.refused for v in verdicts) / len(verdicts)


def run_finetune(job: FinetuneJob, on_step: Callable[[StepRecord], None] | None = None) -> dict:
    """Train on ``job.examples`` and export; returns (and writes) the training record."""
    started = time.monotonic()
    torch.set_num_threads(job.threads)
    base = GGUFModel(job.base)
    with Engine(job.base) as engine:
        tokenized = [tokenize_example(base, engine, e) for e in job.examples]
    model = TorchModel.from_gguf(base, lora_rank=job.lora_rank, threads=job.threads)
    curve = train(model, tokenized, job.settings, on_step)
    weights = model.merged_weights()
    del model
    job.out_dir.mkdir(parents=True, exist_ok=True)
    outputs = {}
    for choice in job.exports:
        path = job.out_dir / f"{job.name}.{choice}.gguf"
        export_gguf(base, weights, path, choice, job.name, job.threads)
        outputs[choice] = {"path": path.name, "sha256": file_sha256(path)}
    kinds = sorted({e.kind for e in job.examples})
    record = {
        "name": job.name,
        "base": {"path": str(job.base), "sha256": base.sha256},
        "examples": {
            "count": len(job.examples),
            "by_kind": {k: sum(e.kind == k for e in job.examples) for k in kinds},
            "sha256": examples_sha256(list(job.examples)),
            "answer_tokens": sum(len(t.tokens) - t.answer_start for t in tokenized),
        },
        "sources": {what: {"path": p, "sha256": file_sha256(p)} for what, p in job.sources},
        "method": f"LoRA rank {job.lora_rank}, merged" if job.lora_rank else "full finetune",
        "settings": job.settings.describe(),
        "torch": torch.__version__,
        "curve": [asdict(r) for r in curve],
        "outputs": outputs,
        "seconds": round(time.monotonic() - started, 1),
    }
    atomic_write_text(job.out_dir / f"{job.name}.training.json", json.dumps(record, indent=2))
    return record


def run_finetune_with_progress(job: FinetuneJob) -> dict:
    """``run_finetune`` with a progress bar showing the loss; also writes
    ``<name>.curve.png``, the loss curve."""
    with tqdm(total=job.settings.steps, desc=job.name, unit="step") as bar:

        def on_step(record: StepRecord) -> None:
            bar.set_postfix(loss=f"{record.loss:.3f}")
            bar.update()

        record = run_finetune(job, on_step)
    losses = [r["loss"] for r in record["curve"]]
    plot_training_curve(losses, f"{job.name}: training loss", job.out_dir / f"{job.name}.curve.png")
    return record
