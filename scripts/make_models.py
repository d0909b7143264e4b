"""Write random-weight GGUFs of real architectures in the types uploads use.

Each architecture (``visage_local.synthetic.ARCHITECTURES``) is written in F16/F32 with
gguf-py, then re-encoded by llama.cpp's own ``llama_model_quantize`` into each upload
type. The files go to a git-ignored folder; the disk space they take is said first.

    .venv/bin/python scripts/make_models.py                     # every architecture, every type
    .venv/bin/python scripts/make_models.py --arch qwen3moe --type Q4_K_M --type IQ4_XS
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from visage_local import synthetic
from visage_local.errors import ConfigError, ModelFileError

OUT = Path(__file__).resolve().parents[1] / "models" / "synthetic"


def main() -> None:
    """Parse the arguments, say the space needed, write the files."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", action="append", choices=list(synthetic.ARCHITECTURES))
    parser.add_argument("--type", action="append", dest="types", metavar="FTYPE")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    archs = args.arch or list(synthetic.ARCHITECTURES)
    types = args.types or list(synthetic.UPLOAD_TYPES)
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
                out = synthetic.requantize(source, args.out / f"{arch}.{ftype}.gguf", ftype)
            except (ConfigError, ModelFileError) as error:
                raise SystemExit(f"error: {error}") from None
            print(f"{out}  {out.stat().st_size / 2**20:.2f} MiB")


if __name__ == "__main__":
    main()
