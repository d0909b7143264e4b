"""Make a safety-aligned testbed from SmolLM2-135M-Instruct on a CPU.

Finetunes the model (full finetune by default; ``--lora-rank R`` for LoRA) on
harmful requests paired with the project's refusals
(visage_local/data/finetuning/refusals.txt) and on benign requests
(visage_local/data/finetuning/benign_train.txt) paired with the model's own greedy
answers, so it learns to refuse without forgetting how to answer. The harmful
requests are rows ``--skip`` .. ``--skip + --harmful`` of ``--prompts``; with
AdvBench and the default skip of 80 they never overlap the first 80 rows that
sweeps evaluate on.

Writes OUT/testbed.f16.gguf, OUT/testbed.q8_0.gguf, OUT/testbed.training.json
(seed, settings, data hashes, loss curve, file hashes) and OUT/testbed.curve.png,
then prints the refusal rate on 32 training prompts and on the first 32 rows of
``--prompts`` (held out) before and after.

    .venv/bin/python scripts/make_testbed.py --prompts ../shared/data/advbench/harmful_behaviors.csv
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from visage_local.asking.prompts import load_prompts
from visage_local.engine.llama import Engine
from visage_local.errors import VisageError
from visage_local.gguf.model import GGUFModel
from visage_local.sources.registry import resolve_model
from visage_local.training.data import (
    benign_training_prompts,
    refusal_examples,
    self_answer_examples,
)
from visage_local.training.finetune import TrainingSettings
from visage_local.training.pipeline import FinetuneJob, refusal_rate, run_finetune_with_progress

CHECK_PROMPTS = 32


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", required=True, help="harmful prompt file (AdvBench CSV)")
    parser.add_argument("--model", default=None, help="base GGUF (default: SmolLM2-135M-Instruct)")
    parser.add_argument("--out", type=Path, default=Path("models/testbed"))
    parser.add_argument("--name", default="testbed")
    parser.add_argument("--skip", type=int, default=80, help="prompt rows kept for evaluation")
    parser.add_argument("--harmful", type=int, default=200, help="harmful training prompts")
    parser.add_argument("--benign", type=int, default=110, help="benign training prompts")
    parser.add_argument("--answer-tokens", type=int, default=96, help="length of benign answers")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--warmup-steps", type=int, default=10)
    parser.add_argument("--lora-rank", type=int, default=0, help="0: full finetune")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--export", default="f16,q8_0", help="comma-separated: f16, q8_0, same")
    parser.add_argument("--no-check", action="store_true", help="skip the refusal-rate check")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        base_path = resolve_model(args.model)
        prompts = list(load_prompts(args.prompts).prompts)
        harmful = prompts[args.skip : args.skip + args.harmful]
        if len(harmful) < args.harmful:
            raise VisageError(f"{args.prompts}: only {len(harmful)} prompts after row {args.skip}")
        benign = benign_training_prompts()[: args.benign]
        base = GGUFModel(base_path)
        with Engine(base_path) as engine:
            print(f"answering {len(benign)} benign prompts with the base model ...", flush=True)
            examples = refusal_examples(harmful, args.seed) + self_answer_examples(
                base, engine, benign, args.answer_tokens
            )
        settings = TrainingSettings(
            steps=args.steps,
            batch_size=args.batch_size,
            learning_rate=args.learning_rate,
            warmup_steps=min(args.warmup_steps, args.steps),
            seed=args.seed,
        )
        job = FinetuneJob(
            base=base_path,
            examples=tuple(examples),
            settings=settings,
            out_dir=args.out,
            name=args.name,
            exports=tuple(args.export.split(",")),
            lora_rank=args.lora_rank,
            sources=(("harmful prompts", str(args.prompts)),),
        )
        args.out.mkdir(parents=True, exist_ok=True)
        record = run_finetune_with_progress(job)
        print(
            f"trained in {record['seconds']:.0f} s; wrote {', '.join(o['path'] for o in record['outputs'].values())}"
        )
        if not args.no_check:
            trained = args.out / record["outputs"][job.exports[0]]["path"]
            for label, check in (
                ("training", harmful[:CHECK_PROMPTS]),
                ("held out", prompts[:CHECK_PROMPTS]),
            ):
                before, after = refusal_rate(base_path, check), refusal_rate(trained, check)
                print(
                    f"refusal rate on {len(check)} {label} prompts: {before:.1f}% -> {after:.1f}%"
                )
    except VisageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
