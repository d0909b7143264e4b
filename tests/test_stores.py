"""Models where users keep them: Ollama's store, the Hugging Face cache and LM Studio's
folder, each laid out here as the tool writes it (Ollama's manifest JSON and sha256 blob
names, the hub cache's refs and symlinked snapshots), holding real GGUF files."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import write_tiny_gguf
from gguf import GGMLQuantizationType

from visage_local.cli.main import main
from visage_local.errors import ConfigError
from visage_local.gguf.model import GGUFModel
from visage_local.sources.registry import resolve_model

Q8, Q4 = GGMLQuantizationType.Q8_0, GGMLQuantizationType.Q4_0


def _ollama_pull(root: Path, name: str, tag: str, model: Path, host: str | None = None) -> Path:
    """What `ollama pull` leaves: a blob named by the file's sha256 and a manifest naming it
    beside other layers (template, params)."""
    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    blob = root / "blobs" / f"sha256-{digest}"
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(model.read_bytes())
    template = root / "blobs" / ("sha256-" + "1" * 64)
    template.write_text("{{ .Prompt }}")
    parts = name.split("/")
    prefix = {1: ["registry.ollama.ai", "library"], 2: ["registry.ollama.ai"], 3: []}[len(parts)]
    manifest = root.joinpath("manifests", *prefix, *parts, tag)
    manifest.parent.mkdir(parents=True, exist_ok=True)
    layers = [
        {"mediaType": "application/vnd.ollama.image.model", "digest": f"sha256:{digest}",
         "size": model.stat().st_size},
        {"mediaType": "application/vnd.ollama.image.template", "digest": "sha256:" + "1" * 64,
         "size": 13},
    ]  # fmt: skip
    manifest.write_text(json.dumps({"schemaVersion": 2, "layers": layers}))
    return blob


def _hf_download(root: Path, repo: str, files: dict[str, Path], commit: str = "a" * 40) -> Path:
    """What huggingface_hub leaves: blobs by hash, a snapshot of symlinks, refs/main."""
    folder = root / ("models--" + repo.replace("/", "--"))
    snapshot = folder / "snapshots" / commit
    for name, source in files.items():
        data = source.read_bytes()
        blob = folder / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / "main").write_text(commit)
    return snapshot


@pytest.fixture
def stores(tmp_path, monkeypatch):
    """Empty stores in tmp_path, named by the environment variables each tool reads."""
    paths = {k: tmp_path / k for k in ("ollama", "hf", "lmstudio")}
    monkeypatch.setenv("OLLAMA_MODELS", str(paths["ollama"]))
    monkeypatch.setenv("HF_HUB_CACHE", str(paths["hf"]))
    monkeypatch.setenv("LMSTUDIO_MODELS", str(paths["lmstudio"]))
    return paths


@pytest.fixture(scope="module")
def ggufs(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("ggufs")
    return {
        "q8": write_tiny_gguf(folder / "tiny-Q8_0.gguf", [Q8], seed=1),
        "q4": write_tiny_gguf(folder / "tiny-Q4_0.gguf", [Q4], seed=2),
    }


def test_an_ollama_name_resolves_to_its_model_blob(stores, ggufs):
    blob = _ollama_pull(stores["ollama"], "tiny", "latest", ggufs["q8"])
    user = _ollama_pull(stores["ollama"], "someone/tiny", "q4", ggufs["q4"])
    hf = _ollama_pull(stores["ollama"], "hf.co/owner/tiny-GGUF", "Q4_0", ggufs["q4"])
    assert resolve_model("ollama:tiny") == resolve_model("ollama:tiny:latest") == blob
    assert resolve_model("ollama:someone/tiny:q4") == user
    assert resolve_model("ollama:hf.co/owner/tiny-GGUF:Q4_0") == hf
    assert GGUFModel(blob).sha256 == GGUFModel(ggufs["q8"]).sha256
    with pytest.raises(ConfigError, match=r"not in .*models there: ollama:.*tiny:latest"):
        resolve_model("ollama:tiny:7b")
    with pytest.raises(ConfigError, match=r"did you mean ollama:someone/tiny:q4\?"):
        resolve_model("ollama:Someone/Tiny")
    blob.unlink()
    with pytest.raises(ConfigError, match="model blob sha256-.* is missing"):
        resolve_model("ollama:tiny")


def test_a_hugging_face_repo_resolves_from_the_cache_by_quant_or_file(stores, ggufs):
    snapshot = _hf_download(
        stores["hf"],
        "owner/Tiny-GGUF",
        {"Tiny-Q8_0.gguf": ggufs["q8"], "Tiny-Q4_0.gguf": ggufs["q4"],
         "mmproj-Tiny-f16.gguf": ggufs["q8"]},
    )  # fmt: skip
    assert resolve_model("hf:owner/Tiny-GGUF:Q4_0") == snapshot / "Tiny-Q4_0.gguf"
    assert resolve_model("hf:owner/Tiny-GGUF:q8_0") == snapshot / "Tiny-Q8_0.gguf"
    assert resolve_model("hf:owner/Tiny-GGUF:Tiny-Q8_0.gguf") == snapshot / "Tiny-Q8_0.gguf"
    with pytest.raises(ConfigError, match="matches 2 files .*Tiny-Q4_0.gguf.*add :QUANT"):
        resolve_model("hf:owner/Tiny-GGUF")
    with pytest.raises(ConfigError, match="matches nothing"):
        resolve_model("hf:owner/Tiny-GGUF:IQ2_M")
    with pytest.raises(ConfigError, match="nothing is downloaded"):
        resolve_model("hf:owner/Other-GGUF")
    # lookups that help: an ambiguous quant lists only its matches, a prefix or another case
    # is suggested, a missing store folder is named as missing
    _hf_download(stores["hf"], "owner/Two-GGUF", {
        "Two-Q4_0.gguf": ggufs["q4"], "two-v2-Q4_0.gguf": ggufs["q4"], "Two-Q8_0.gguf": ggufs["q8"],
    })  # fmt: skip
    with pytest.raises(ConfigError) as raised:
        resolve_model("hf:owner/Two-GGUF:Q4_0")
    message = str(raised.value)
    assert "matches 2 files" in message and "Two-Q8_0" not in message
    assert "name one with :FILE" in message and "add :QUANT" not in message
    with pytest.raises(ConfigError, match=r"matches nothing .*did you mean :Q4_0\?"):
        resolve_model("hf:owner/Tiny-GGUF:Q4")
    with pytest.raises(ConfigError, match=r"did you mean hf:owner/Tiny-GGUF\?"):
        resolve_model("hf:Owner/tiny-gguf:Q4_0")
    big = _hf_download(stores["hf"], "owner/Big-GGUF", {
        "Big-Q4_0-00001-of-00002.gguf": ggufs["q4"], "Big-Q4_0-00002-of-00002.gguf": ggufs["q8"],
    })  # fmt: skip
    # a split model is named by its first part (test_split.py reads it as one)
    assert resolve_model("hf:owner/Big-GGUF:Q4_0") == big / "Big-Q4_0-00001-of-00002.gguf"


def test_models_scan_lists_every_store_with_what_each_file_holds(stores, ggufs):
    _ollama_pull(stores["ollama"], "tiny", "latest", ggufs["q8"])
    _hf_download(stores["hf"], "owner/Tiny-GGUF", {"Tiny-Q4_0.gguf": ggufs["q4"]})
    lm = stores["lmstudio"] / "publisher" / "Tiny-GGUF" / "Tiny-Q8_0.gguf"
    lm.parent.mkdir(parents=True)
    lm.write_bytes(ggufs["q8"].read_bytes())
    (stores["lmstudio"] / "publisher" / "Tiny-GGUF" / "broken-Q2_K.gguf").write_bytes(b"GGUF")
    assert resolve_model("lmstudio:publisher/Tiny-GGUF:Q8_0") == lm

    result = CliRunner().invoke(main, ["models", "--scan", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["spec"]: r for r in json.loads(result.stdout)}
    assert set(rows) == {
        "ollama:tiny:latest",
        "hf:owner/Tiny-GGUF:Tiny-Q4_0.gguf",
        "lmstudio:publisher/Tiny-GGUF:Tiny-Q8_0.gguf",
        "lmstudio:publisher/Tiny-GGUF:broken-Q2_K.gguf",
    }
    for spec, row in rows.items():  # every listed spec resolves to the file listed
        assert resolve_model(spec) == Path(row["path"])
        if "broken" in spec:
            assert "error" in row
            continue
        model = GGUFModel(row["path"])
        assert (row["architecture"], row["parameters"]) == ("llama", model.parameter_count)
        assert row["types"][0] == ("Q8_0" if "Q8" in spec or "ollama" in spec else "Q4_0")
    text = CliRunner().invoke(main, ["models", "--scan"])
    assert "ollama:tiny:latest" in text.output and "unreadable" in text.output


def test_a_store_folder_that_does_not_exist_is_named(tmp_path, monkeypatch):
    for variable in ("OLLAMA_MODELS", "HF_HUB_CACHE", "LMSTUDIO_MODELS"):
        monkeypatch.setenv(variable, str(tmp_path / "missing" / variable))
    result = CliRunner().invoke(main, ["models", "--scan"])
    assert result.exit_code == 0
    for variable in ("OLLAMA_MODELS", "HF_HUB_CACHE", "LMSTUDIO_MODELS"):
        assert f"{tmp_path / 'missing' / variable} does not exist" in result.output
    for spec in ("ollama:tiny", "hf:owner/Tiny-GGUF:Q4_0", "lmstudio:publisher/Tiny:Q8_0"):
        with pytest.raises(ConfigError, match="folder .* does not exist"):
            resolve_model(spec)


def test_a_sweep_of_an_ollama_model_is_named_after_its_spec(stores, smollm2, tmp_path, monkeypatch):
    _ollama_pull(stores["ollama"], "smollm2", "135m", smollm2)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(
        main,
        ["sweep", "ollama:smollm2:135m", "--steps", "1", "--limit", "1",
         "--max-new-tokens", "2", "--no-coherence"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    folder = tmp_path / "runs/ollama-smollm2-135m-1d-seed123"
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["model_sha256"] == GGUFModel(smollm2).sha256
    # the name typed, not the blob's hash: in the progress line, the summary, config.toml,
    # the report's title and compare
    assert "ollama:smollm2:135m: 3 points" in result.output and "sha256-" not in result.output
    assert summary["model_spec"] == "ollama:smollm2:135m"
    assert "# The model as typed: ollama:smollm2:135m" in (folder / "config.toml").read_text()
    report = CliRunner().invoke(main, ["report", str(folder)])
    assert report.exit_code == 0, report.output
    assert (
        "<title>Safety landscape: ollama:smollm2:135m</title>"
        in (folder / "report.html").read_text()
    )
    compared = CliRunner().invoke(main, ["compare", str(folder)])
    assert compared.exit_code == 0 and "ollama:smollm2:135m" in compared.output
    bad = CliRunner().invoke(main, ["sweep", "ollama:nothing"])
    assert bad.exit_code == 2 and "ollama:nothing: not in" in bad.output
