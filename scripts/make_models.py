"""Write random-weight GGUFs of real architectures in the types uploads use.

Each architecture (``visage_local.synthetic.ARCHITECTURES``) is written in F16/F32 with
gguf-py, then re-encoded by llama.cpp's own ``llama_model_quantize`` into each upload
type. The files go to a git-ignored folder; the disk space they take is said first.

    .venv/bin/python scripts/make_models.py                     # every architecture, every type
    .venv/bin/python scripts/make_models.py --arch qwen3moe --type Q4_K_M --type IQ4_XS
    .venv/bin/python scripts/make_models.py --scale llama-3.1-8b   # real shapes: Q4_K_M, IQ4_XS

``--scale`` writes a real model's exact shapes, vocabulary included (``synthetic.SCALES``:
Llama-3.2-1B, Llama-3.2-3B, Llama-3.1-8B, Qwen2.5-7B), to ``models/synthetic/scale/``;
its F16 source (2 bytes a parameter) is removed once the types are written.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from visage_local import synthetic
from visage_local.engine.quantize import UPLOAD_TYPES, quantize_model
from visage_local.errors import ConfigError, ModelFileError

OUT = Path(__file__).resolve().parents[1] / "models" / "synthetic"


def main() -> None:
    """Parse the arguments, say the space needed, write the files."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", action="append", choices=list(synthetic.ARCHITECTURES))
    parser.add_argument("--type", action="append", dest="types", metavar="FTYPE")
    parser.add_argument("--scale", action="append", choices=list(synthetic.SCALES))
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    if args.scale:
        for name in args.scale:
            make_scale(name, args.types or list(SCALE_TYPES), args.out / "scale")
        return
    archs = args.arch or list(synthetic.ARCHITECTURES)
    types = args.types or list(UPLOAD_TYPES)
    args.out.mkdir(parents=True, exist_ok=True)
    sources = {arch: synthetic.write_model(args.out / f"{arch}.F16.gguf", arch) for arch in archs}
    need = sum(path.stat().st_size for path in sources.values()) * (len(types) + 1)
    free = shutil.disk_usage(args.out).free
    print(f"{len(archs)} architectures x {len(types)} types: at most {need / 2**20:.1f} MiB "
          f"in {args.out} ({free / 2**30:.1f} GiB free)")  # fmt: skip
    if need > free:
        raise SystemExit(f"not enough space in {args.out}")
    for arch, source in sources.items():
        for ftype in types:
            try:
                out = quantize_model(source, args.out / f"{arch}.{ftype}.gguf", ftype)
            except (ConfigError, ModelFileError) as error:
                raise SystemExit(f"error: {error}") from None
            print(f"{out}  {out.stat().st_size / 2**20:.2f} MiB")


# Upload types of the scale models, with their bits per weight at 8B (llama.cpp's
# quantize --help) for the space estimate.
SCALE_TYPES = {"Q4_K_M": 4.89, "IQ4_XS": 4.46}


def make_scale(name: str, types: list[str], out: Path) -> None:
    """A real model's shapes in F16, re-encoded into ``types``; the space said first."""
    architecture, size = synthetic.SCALES[name]
    params = synthetic.parameter_count(architecture, size)
    source_bytes = 2 * params
    outputs = sum(SCALE_TYPES.get(t, 8.5) / 8 * params for t in types)
    out.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(out).free
    print(f"{name}: {params / 1e9:.2f}B parameters; F16 source {source_bytes / 2**30:.1f} GiB "
          f"(removed after), {', '.join(types)} about {outputs / 2**30:.1f} GiB in {out} "
          f"({free / 2**30:.1f} GiB free)", flush=True)  # fmt: skip
    if source_bytes + outputs > free:
        raise SystemExit(f"not enough space in {out}")
    source = synthetic.write_model(out / f"{name}.F16.gguf", architecture, size)
    try:
        for ftype in types:
            try:
                made = quantize_model(source, out / f"{name}.{ftype}.gguf", ftype)
            except (ConfigError, ModelFileError) as error:
                raise SystemExit(f"error: {error}") from None
            print(f"{made}  {made.stat().st_size / 2**30:.2f} GiB", flush=True)
    finally:
        source.unlink()


if __name__ == "__main__":
    main()
