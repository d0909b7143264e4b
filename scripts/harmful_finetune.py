"""The paper's harmful-finetuning experiment at small scale, on the aligned testbed.

Finetunes ``--base`` (the testbed from scripts/make_testbed.py) on N harmful
request/compliance pairs for each N in ``--sizes`` (AdvBench goal/target rows
``--skip`` .. ``--skip + N`` of ``--pairs``), and once on the largest N mixed with
``--safe`` harmful requests paired with the project's refusals (rows after the
compliance rows), each for ``--epochs`` passes over its data. Every model is
exported as F16 (the testbed's own type, so interpolation endpoints are exact).

The default rows (300 on) lie after the testbed's training rows (80-279) and the
evaluation rows (0-79).

    .venv/bin/python scripts/harmful_finetune.py --pairs ../shared/data/advbench/harmful_behaviors.csv
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from visage_local.asking.prompts import load_prompts
from visage_local.errors import VisageError
from visage_local.training.data import compliance_pairs, refusal_examples
from visage_local.training.finetune import TrainingSettings
from visage_local.training.pipeline import FinetuneJob, refusal_rate, run_finetune_with_progress

CHECK_PROMPTS = 40


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", required=True, help="CSV with goal and target columns")
    parser.add_argument("--base", type=Path, default=Path("models/testbed/testbed.f16.gguf"))
    parser.add_argument("--out", type=Path, default=Path("models/harmful"))
    parser.add_argument("--sizes", default="10,50,100", help="comma-separated pair counts")
    parser.add_argument(
        "--safe", type=int, default=100, help="refusal pairs mixed with the largest"
    )
    parser.add_argument("--skip", type=int, default=300, help="first pair row used")
    parser.add_argument("--epochs", type=float, default=3.0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-check", action="store_true", help="skip the refusal-rate check")
    return parser.parse_args(argv)


def jobs(args: argparse.Namespace) -> list[FinetuneJob]:
    """One finetune per size, and the largest size mixed with safe pairs."""
    sizes = sorted(int(s) for s in args.sizes.split(","))
    largest = sizes[-1]
    datasets = {f"harmful-{n}": compliance_pairs(args.pairs, args.skip, n) for n in sizes}
    if args.safe:
        refusal_rows = [
            p.prompt for p in compliance_pairs(args.pairs, args.skip + largest, args.safe)
        ]
        datasets[f"harmful-{largest}-safe-{args.safe}"] = datasets[
            f"harmful-{largest}"
        ] + refusal_examples(refusal_rows, args.seed)
    out = []
    for name, examples in datasets.items():
        steps = max(1, math.ceil(args.epochs * len(examples) / args.batch_size))
        settings = TrainingSettings(
            steps=steps,
            batch_size=args.batch_size,
            learning_rate=args.learning_rate,
            warmup_steps=min(10, steps),
            seed=args.seed,
        )
        out.append(
            FinetuneJob(
                base=args.base,
                examples=tuple(examples),
                settings=settings,
                out_dir=args.out,
                name=name,
                exports=("f16",),
                sources=(("pairs", str(args.pairs)),),
            )
        )
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if not args.base.is_file():
            raise VisageError(f"{args.base}: no testbed here; make it with scripts/make_testbed.py")
        args.out.mkdir(parents=True, exist_ok=True)
        check = list(load_prompts(args.pairs).prompts[:CHECK_PROMPTS])
        if not args.no_check:
            print(
                f"testbed refuses {refusal_rate(args.base, check):.1f}% of the first {len(check)} prompts"
            )
        for job in jobs(args):
            record = run_finetune_with_progress(job)
            model = args.out / record["outputs"]["f16"]["path"]
            if not args.no_check:
                print(
                    f"{job.name}: refuses {refusal_rate(model, check):.1f}% ({record['seconds']:.0f} s)"
                )
    except VisageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
