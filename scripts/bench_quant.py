"""Encode and decode rates of every tensor type, one thread and ``--threads``, side by side.

For each type visage-local requantises: millions of values per second encoded and
decoded by ggml's kernels through ``visage_local.gguf.quant`` on one thread and on
``--threads`` threads (their ratio over the thread count is the parallel efficiency),
and the encode time relative to Q4_K measured in the same run (the machine is shared
and noisy: read the ratios). Values: a (rows x 4096) float32 Gaussian, as a 4096-wide
matrix of a 7-8B model has.

    .venv/bin/python scripts/bench_quant.py [--rows 512] [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from gguf import GGMLQuantizationType

from visage_local.gguf import quant


def best_of(repeats: int, call) -> float:
    """The shortest of ``repeats`` timings of ``call()`` (seconds)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    """Time every supported type and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=512, help="rows of 4096 values")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    values = (np.random.default_rng(0).standard_normal((args.rows, 4096)) * 0.02).astype(np.float32)
    million = values.size / 1e6
    rows = []
    for qtype in sorted(quant.SUPPORTED_TYPES, key=int):
        if qtype == GGMLQuantizationType.F32:
            continue
        raw = quant.quantize(values, qtype)
        encode = [
            best_of(args.repeats, lambda t=t, q=qtype: quant.quantize(values, q, t))
            for t in (1, args.threads)
        ]
        decode = [
            best_of(args.repeats, lambda t=t, q=qtype, r=raw: quant.dequantize(r, q, 4096, t))
            for t in (1, args.threads)
        ]
        rows.append((qtype.name, encode, decode))
    reference = next(encode[0] for name, encode, _ in rows if name == "Q4_K")
    print(f"{million:.2f} M values per call; best of {args.repeats}; threads 1 and {args.threads}")
    print(f"{'type':<8} {'enc 1t':>8} {'enc Nt':>8} {'eff':>5} {'dec 1t':>8} {'dec Nt':>8} "
          f"{'eff':>5} {'enc time / Q4_K':>16}")  # fmt: skip
    for name, encode, decode in rows:
        rates = [million / s for s in (*encode, *decode)]
        enc_eff = encode[0] / encode[1] / args.threads
        dec_eff = decode[0] / decode[1] / args.threads
        print(
            f"{name:<8} {rates[0]:8.2f} {rates[1]:8.2f} {enc_eff:5.2f} {rates[2]:8.1f} "
            f"{rates[3]:8.1f} {dec_eff:5.2f} {encode[0] / reference:16.1f}"
        )
    print("rates in M values/s; eff = (1-thread time / N-thread time) / N")


if __name__ == "__main__":
    main()
