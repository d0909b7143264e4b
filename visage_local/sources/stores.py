"""Where models live on a user's machine: Ollama's store, the Hugging Face cache, LM Studio.

Model specs, all resolved offline, from files already on disk (nothing is downloaded):

- ``ollama:NAME[:TAG]``: the manifest ``manifests/<host>/<namespace>/<model>/<tag>``
  under ``$OLLAMA_MODELS`` (else ``~/.ollama/models``, else the Linux service's
  ``/usr/share/ollama/.ollama/models``) names the model layer's blob,
  ``blobs/sha256-<digest>``. NAME is ``model`` (Ollama's library), ``user/model``, or
  ``host/namespace/model`` (``hf.co/owner/repo``); TAG defaults to ``latest``.
- ``hf:OWNER/REPO[:QUANT or FILE]``: the snapshot ``refs/main`` points to in
  ``models--OWNER--REPO`` under ``$HF_HUB_CACHE`` (else ``$HF_HOME/hub``, else
  ``~/.cache/huggingface/hub``).
- ``lmstudio:PUBLISHER/REPO[:QUANT or FILE]``: ``PUBLISHER/REPO/`` under
  ``$LMSTUDIO_MODELS`` (else ``~/.lmstudio/models``, else the older
  ``~/.cache/lm-studio/models``).

QUANT picks the GGUF whose file name has that word (``Q4_K_M``, ``IQ4_XS``; case does
not matter); FILE names it. Without either, a folder holding one model GGUF gives it.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from visage_local.errors import ConfigError
from visage_local.gguf.model import is_model_file

OLLAMA_MODEL_LAYER = "application/vnd.ollama.image.model"
OLLAMA_REGISTRY = "registry.ollama.ai"
PREFIXES = ("ollama:", "hf:", "lmstudio:")


@dataclass(frozen=True)
class StoredModel:
    """A GGUF file found in a store and the spec that names it."""

    spec: str
    path: Path
    store: str  # "ollama", "hf" or "lmstudio"


def is_store_spec(spec: str) -> bool:
    """True for ``ollama:``, ``hf:`` and ``lmstudio:`` specs."""
    return spec.startswith(PREFIXES)


def resolve(spec: str) -> Path:
    """The GGUF file a store spec names; ConfigError (one line) when it is not on disk, with
    the near matches (another case, a prefix) where there are any."""
    kind, _, rest = spec.partition(":")
    if not rest:
        raise ConfigError(f"{spec}: give a model name after '{kind}:'")
    if kind == "ollama":
        return _ollama_blob(rest)
    root = hf_cache() if kind == "hf" else lmstudio_dir()
    repo, _, selector = rest.partition(":")
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise ConfigError(f"{spec}: expected {kind}:OWNER/REPO[:QUANT or FILE]")
    if not root.is_dir():
        raise ConfigError(f"{spec}: the {STORE_NAMES[kind]} folder {root} does not exist")
    folder = _hf_snapshot(root, repo) if kind == "hf" else root / repo
    if folder is None or not folder.is_dir():
        near = [r for r in _repos(kind, root) if r.lower() == repo.lower()]
        hint = f"; did you mean {kind}:{near[0]}?" if near else ""
        raise ConfigError(f"{spec}: {repo} is not in {root} (nothing is downloaded){hint}")
    return _pick(spec, folder, selector)


STORE_NAMES = {"ollama": "Ollama", "hf": "Hugging Face cache", "lmstudio": "LM Studio"}


def store_folders() -> dict[str, Path]:
    """Each store's folder, by store."""
    return {"ollama": ollama_dir(), "hf": hf_cache(), "lmstudio": lmstudio_dir()}


def _repos(kind: str, root: Path) -> list[str]:
    """The OWNER/REPO names a Hugging Face cache or an LM Studio folder holds."""
    if kind == "hf":
        return [f.name[len("models--") :].replace("--", "/", 1) for f in root.glob("models--*--*")]
    return [p.relative_to(root).as_posix() for p in root.glob("*/*") if p.is_dir()]


def folder_name(spec: str) -> str:
    """A run folder's name for a model spec: ``ollama-llama3.2-1b``, not its blob hash."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", spec).strip("-")


# Ollama ------------------------------------------------------------------------------


def ollama_dir() -> Path:
    """Ollama's models folder: $OLLAMA_MODELS, ~/.ollama/models, or the Linux service's."""
    if "OLLAMA_MODELS" in os.environ:
        return Path(os.environ["OLLAMA_MODELS"])
    home = Path.home() / ".ollama" / "models"
    service = Path("/usr/share/ollama/.ollama/models")
    return service if not home.is_dir() and service.is_dir() else home


def _ollama_manifest(name: str) -> tuple[Path, str]:
    """The manifest path of NAME[:TAG], and the tag."""
    model, _, tag = name.partition(":")
    parts = model.split("/")
    if not all(parts) or len(parts) > 3:
        raise ConfigError(f"ollama:{name}: expected NAME[:TAG], USER/NAME[:TAG] or HOST/NS/NAME")
    parts = {1: [OLLAMA_REGISTRY, "library"], 2: [OLLAMA_REGISTRY], 3: []}[len(parts)] + parts
    return ollama_dir().joinpath("manifests", *parts, tag or "latest"), tag or "latest"


def _ollama_blob(name: str) -> Path:
    manifest, _ = _ollama_manifest(name)
    if not ollama_dir().is_dir():
        raise ConfigError(f"ollama:{name}: the Ollama folder {ollama_dir()} does not exist")
    if not manifest.is_file():
        known = [m.spec for m in _scan_ollama()]
        near = [k for k in known if k.lower().startswith(f"ollama:{name}".lower())]
        hint = f"; did you mean {' or '.join(near)}?" if near else ""
        raise ConfigError(
            f"ollama:{name}: not in {ollama_dir()} (models there: {', '.join(known) or 'none'})"
            + hint
        )
    try:
        layers = json.loads(manifest.read_text())["layers"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"{manifest}: not an Ollama manifest ({e})") from e
    digests = [layer["digest"] for layer in layers if layer.get("mediaType") == OLLAMA_MODEL_LAYER]
    if not digests:
        raise ConfigError(f"ollama:{name}: the manifest has no GGUF model layer")
    blob = ollama_dir() / "blobs" / digests[0].replace(":", "-")
    if not blob.is_file():
        raise ConfigError(f"ollama:{name}: its model blob {blob.name} is missing")
    return blob


def _scan_ollama() -> Iterator[StoredModel]:
    root = ollama_dir() / "manifests"
    if not root.is_dir():
        return
    for manifest in sorted(p for p in root.rglob("*") if p.is_file()):
        parts = manifest.relative_to(root).parts
        if len(parts) != 4:
            continue
        host, namespace, model, tag = parts
        if host == OLLAMA_REGISTRY:
            name = model if namespace == "library" else f"{namespace}/{model}"
        else:
            name = f"{host}/{namespace}/{model}"
        spec = f"ollama:{name}:{tag}"
        try:
            yield StoredModel(spec, _ollama_blob(f"{name}:{tag}"), "ollama")
        except ConfigError:
            continue  # not a GGUF model, or its blob is gone


# Hugging Face cache and LM Studio ------------------------------------------------------


def hf_cache() -> Path:
    """The Hugging Face hub cache: $HF_HUB_CACHE, $HF_HOME/hub or ~/.cache/huggingface/hub."""
    if "HF_HUB_CACHE" in os.environ:
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME", str(Path.home() / ".cache" / "huggingface"))
    return Path(home) / "hub"


def lmstudio_dir() -> Path:
    """LM Studio's models folder: $LMSTUDIO_MODELS, ~/.lmstudio/models or the older
    ~/.cache/lm-studio/models."""
    if "LMSTUDIO_MODELS" in os.environ:
        return Path(os.environ["LMSTUDIO_MODELS"])
    new = Path.home() / ".lmstudio" / "models"
    old = Path.home() / ".cache" / "lm-studio" / "models"
    return old if not new.is_dir() and old.is_dir() else new


def _hf_snapshot(root: Path, repo: str) -> Path | None:
    """The snapshot folder refs/main names (else the newest snapshot)."""
    folder = root / ("models--" + repo.replace("/", "--"))
    ref = folder / "refs" / "main"
    if ref.is_file():
        return folder / "snapshots" / ref.read_text().strip()
    snapshots = sorted((folder / "snapshots").glob("*"), key=lambda p: p.stat().st_mtime)
    return snapshots[-1] if snapshots else None


def _ggufs(folder: Path) -> list[Path]:
    """The model GGUFs in a folder and below it (multimodal projectors left out; a split
    model by its first part)."""
    return sorted(p for p in folder.rglob("*.gguf") if p.is_file() and is_model_file(p))


def _words(path: Path) -> set[str]:
    return {w.lower() for w in re.split(r"[.\-]", path.name[: -len(".gguf")]) if w}


def _pick(spec: str, folder: Path, selector: str) -> Path:
    """The one GGUF in ``folder`` the selector names: a file name, or a quant word (case
    does not matter); an error lists the matches only, or the quants a prefix names."""
    files = _ggufs(folder)
    relative = {p: p.relative_to(folder).as_posix() for p in files}
    if selector.lower().endswith(".gguf"):
        chosen = [p for p in files if selector in (relative[p], p.name)]
    elif selector:
        chosen = [p for p in files if selector.lower() in _words(p)]
    else:
        chosen = files
    if len(chosen) == 1:
        return chosen[0]
    if len(chosen) > 1:
        names = ", ".join(relative[p] for p in chosen)
        how = "name one with :FILE" if selector else "add :QUANT or :FILE"
        raise ConfigError(f"{spec} matches {len(chosen)} files in {folder} ({names}); {how}")
    prefixed = sorted(
        {w for p in files for w in _words(p) if selector and w.startswith(selector.lower())}
    )
    if prefixed:
        hints = " or ".join(f":{w.upper()}" for w in prefixed)
        raise ConfigError(f"{spec} matches nothing in {folder}; did you mean {hints}?")
    names = ", ".join(relative.values()) or "no GGUF file"
    raise ConfigError(f"{spec} matches nothing in {folder} ({names}); add :QUANT or :FILE")


def _scan_folder(root: Path, store: str, depth: int) -> Iterator[StoredModel]:
    if not root.is_dir():
        return
    repos = [p for p in root.glob("/".join(["*"] * depth)) if p.is_dir()]
    for repo in sorted(repos):
        name = repo.relative_to(root).as_posix()
        for path in _ggufs(repo):
            yield StoredModel(f"{store}:{name}:{path.relative_to(repo).as_posix()}", path, store)


def _scan_hf() -> Iterator[StoredModel]:
    root = hf_cache()
    if not root.is_dir():
        return
    for folder in sorted(root.glob("models--*--*")):
        repo = folder.name[len("models--") :].replace("--", "/", 1)
        snapshot = _hf_snapshot(root, repo)
        if snapshot is None or not snapshot.is_dir():
            continue
        for path in _ggufs(snapshot):
            yield StoredModel(f"hf:{repo}:{path.relative_to(snapshot).as_posix()}", path, "hf")


def scan() -> list[StoredModel]:
    """Every GGUF model in the Ollama store, the Hugging Face cache and LM Studio's folder."""
    return [*_scan_ollama(), *_scan_hf(), *_scan_folder(lmstudio_dir(), "lmstudio", 2)]
