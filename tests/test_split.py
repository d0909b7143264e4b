"""Split GGUFs (NAME-00001-of-0000N.gguf ...) read, perturbed and run as one model."""

from __future__ import annotations

from pathlib import Path

import llama_cpp
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import small_sweep, sweep_answers
from gguf import GGUFWriter

from visage_local import synthetic
from visage_local.cli.main import main
from visage_local.engine.quantize import quantize_model
from visage_local.errors import ModelFileError
from visage_local.gguf.model import GGUFModel
from visage_local.sources.registry import model_label


def write_split(source: GGUFModel, path: Path, max_tensors: int) -> list[Path]:
    """``source`` written by gguf-py's writer as a split model of at most ``max_tensors``
    tensors a part (the layout llama.cpp's gguf-split writes); returns the parts."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = GGUFWriter(str(path), source.architecture, split_max_tensors=max_tensors)
    for key, value, value_type, item_type in source.metadata_items():
        if key != "general.architecture":
            writer.add_key_value(key, value, value_type, sub_type=item_type)
    for info in source.tensors:
        raw = source.raw(info).reshape(*info.shape[:0:-1], -1)  # numpy order, bytes per row
        writer.add_tensor(info.name, raw, raw_shape=raw.shape, raw_dtype=info.qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return sorted(path.parent.glob(f"{path.stem}-*-of-*.gguf"))


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> tuple[Path, list[Path]]:
    """A small Qwen3-shaped Q4_K_M model, whole and in three parts."""
    folder = tmp_path_factory.mktemp("split")
    source = synthetic.write_model(folder / "f16.gguf", "qwen3")
    whole = quantize_model(source, folder / "model.gguf", "Q4_K_M")
    parts = write_split(GGUFModel(whole), folder / "split" / "model.gguf", max_tensors=10)
    return whole, parts


def test_any_part_names_the_whole_model(models):
    whole, parts = models
    assert len(parts) == 3
    one = GGUFModel(whole)
    for part in parts:
        split = GGUFModel(part)
        assert split.is_split and split.path == parts[0]
        assert [(t.name, t.qtype, t.shape) for t in split.tensors] == [
            (t.name, t.qtype, t.shape) for t in one.tensors
        ]
        assert {t.part for t in split.tensors} == {0, 1, 2}
        for a, b in zip(one.tensors, split.tensors, strict=True):
            assert np.array_equal(one.raw(a), split.raw(b))
        assert split.chat_template == one.chat_template


def test_the_run_folder_is_named_after_the_model_not_its_part(models):
    _, parts = models
    assert model_label(None, parts[0]) == "model"


def test_a_missing_part_is_named(models, tmp_path):
    _, parts = models
    for part in parts[:2]:
        (tmp_path / part.name).write_bytes(part.read_bytes())
    with pytest.raises(ModelFileError, match="without its part model-00003-of-00003.gguf"):
        GGUFModel(tmp_path / parts[0].name)


def test_perturbing_the_split_model_perturbs_the_same_tensors(models, tmp_path):
    """perturb writes one merged file whose tensors are the whole model's, moved alike;
    llama.cpp loads the split parts themselves to the same logits as the whole file."""
    whole, parts = models
    runner = CliRunner()
    for name, model in (("whole", whole), ("split", parts[1])):
        args = ["perturb", str(model), "--alpha", "0.3", "-o", str(tmp_path / f"{name}.gguf")]
        assert runner.invoke(main, args).exit_code == 0
    a, b = GGUFModel(tmp_path / "whole.gguf"), GGUFModel(tmp_path / "split.gguf")
    assert not b.is_split and b.metadata("split.count") is None
    for x, y in zip(a.tensors, b.tensors, strict=True):
        assert x.name == y.name and np.array_equal(a.raw(x), b.raw(y))
    logits = []
    for path in (whole, parts[0]):
        llm = llama_cpp.Llama(str(path), n_ctx=64, verbose=False, logits_all=True)
        llm.eval(llm.tokenize(b"hello there"))
        logits.append(np.array(llm.scores[: llm.n_tokens]))
    assert np.array_equal(logits[0], logits[1])


def test_a_sweep_of_the_split_model_equals_the_whole_ones(models, tmp_path):
    whole, parts = models
    small_sweep(whole, tmp_path / "whole")
    small_sweep(parts[0], tmp_path / "split")
    assert sweep_answers(tmp_path / "split") == sweep_answers(tmp_path / "whole")
