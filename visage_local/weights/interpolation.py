"""Directions from a finetune: the difference of two models, or a LoRA adapter.

``FinetuneDirection``: d = theta_finetune - theta_base, tensor by tensor, both
dequantised (the two files may use different types). Along it, t = 0 is the
base model and t = 1 the finetune: the interpolation landscape of the paper.
At t = 1 a tensor whose output type is the finetune's own type is written as
the finetune's own bytes, so the endpoint is the finetune exactly (requantising
its dequantised values is not exact for every type).

``LoraDirection``: d = scale * B @ A for every tensor the adapter targets, read
from llama.cpp's GGUF adapter format (``general.type`` = ``adapter``,
``adapter.type`` = ``lora``; tensors ``<name>.lora_a`` of shape (rank, in) and
``<name>.lora_b`` of shape (out, rank) in numpy order; scale =
``adapter.lora.alpha`` / rank, or 1 without an alpha, as llama.cpp applies it).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType

from visage_local.errors import ConfigError
from visage_local.gguf.model import GGUFModel
from visage_local.weights.directions import TensorSelection

NO_SELECTION = TensorSelection(exclude=())  # every tensor: a finetune may change norms too


def check_pair(base: GGUFModel, finetune: GGUFModel) -> None:
    """ConfigError naming the first way two models cannot be interpolated."""
    if base.architecture != finetune.architecture:
        raise ConfigError(
            f"{finetune.path}: architecture {finetune.architecture!r} differs from the base "
            f"model's {base.architecture!r}"
        )
    base_names = [t.name for t in base.tensors]
    finetune_names = {t.name for t in finetune.tensors}
    for name in base_names:
        if name not in finetune_names:
            raise ConfigError(f"{finetune.path}: has no tensor {name!r} (the base model does)")
    extra = sorted(finetune_names - set(base_names))
    if extra:
        raise ConfigError(f"{finetune.path}: tensor {extra[0]!r} is not in the base model")
    for info in base.tensors:
        other = finetune.tensor(info.name)
        if other.shape != info.shape:
            raise ConfigError(
                f"tensor {info.name!r}: shape {tuple(other.shape)} in {finetune.path} but "
                f"{tuple(info.shape)} in the base model"
            )


class FinetuneDirection:
    """theta_finetune - theta_base on every tensor."""

    def __init__(
        self,
        finetune_path: str | os.PathLike,
        threads: int = 1,
        tensors: TensorSelection = NO_SELECTION,
    ):
        self.finetune = GGUFModel(finetune_path)
        self.threads = threads
        self.tensors = tensors

    def excludes(self, tensor_name: str) -> bool:
        """Only when the user leaves the tensor out: a finetune may change any tensor,
        norms included."""
        return self.tensors.excludes(tensor_name)

    def tensor(self, tensor_name: str, weights: np.ndarray, n_slices: int = 1) -> np.ndarray | None:
        """The difference on one tensor, given the base model's dequantised weights (not
        normalised, so ``n_slices`` changes nothing)."""
        target = self.finetune.dequantize(self.finetune.tensor(tensor_name), self.threads)
        return target.reshape(weights.shape) - weights

    def endpoint_raw(self, tensor_name: str, qtype: GGMLQuantizationType) -> np.ndarray | None:
        """The finetune's own bytes of a tensor when it is stored in ``qtype``, else None."""
        info = self.finetune.tensor(tensor_name)
        return np.array(self.finetune.raw(info)) if info.qtype == qtype else None

    def describe(self) -> dict[str, object]:
        """What determines the direction."""
        return {
            "kind": "finetune - base",
            "finetune": str(self.finetune.path),
            "finetune_sha256": self.finetune.sha256,
        } | _selection_setting(self.tensors)


class LoraDirection:
    """scale * B @ A on the tensors a LoRA adapter targets, zero elsewhere."""

    def __init__(
        self,
        adapter_path: str | os.PathLike,
        base: GGUFModel,
        tensors: TensorSelection = NO_SELECTION,
    ):
        self.adapter = GGUFModel(adapter_path)
        self.path = Path(adapter_path)
        self.tensors = tensors
        kind = self.adapter.metadata("general.type")
        if kind != "adapter" or self.adapter.metadata("adapter.type") != "lora":
            raise ConfigError(
                f"{self.path}: not a LoRA adapter in llama.cpp's GGUF format "
                "(general.type 'adapter', adapter.type 'lora')"
            )
        if self.adapter.architecture != base.architecture:
            raise ConfigError(
                f"{self.path}: adapter for {self.adapter.architecture!r}, base model is "
                f"{base.architecture!r}"
            )
        self.alpha = self.adapter.metadata("adapter.lora.alpha")
        self.pairs: dict[str, tuple] = {}
        for t in self.adapter.tensors:
            if t.name.endswith(".lora_a"):
                name = t.name[: -len(".lora_a")]
                try:
                    b = self.adapter.tensor(name + ".lora_b")
                except KeyError as e:
                    raise ConfigError(f"{self.path}: {t.name} has no matching .lora_b") from e
                self.pairs[name] = (t, b)
        if not self.pairs:
            raise ConfigError(f"{self.path}: the adapter has no lora_a/lora_b tensors")
        for name, (a, b) in self.pairs.items():
            try:
                target = base.tensor(name)
            except KeyError as e:
                raise ConfigError(f"{self.path}: targets {name!r}, not in the base model") from e
            rank = a.shape[1]
            if a.shape[0] != target.shape[0] or b.shape[1] != target.shape[1] or b.shape[0] != rank:
                raise ConfigError(
                    f"{self.path}: {name}: lora_a {tuple(a.shape)} and lora_b {tuple(b.shape)} "
                    f"do not fit the tensor's shape {tuple(target.shape)} (GGUF order)"
                )

    def scale(self, rank: int) -> float:
        """llama.cpp's scale for an adapter of this rank: alpha / rank, or 1 without alpha."""
        return float(self.alpha) / rank if self.alpha else 1.0

    def excludes(self, tensor_name: str) -> bool:
        """True for tensors the adapter does not target, or the user leaves out."""
        return tensor_name not in self.pairs or self.tensors.excludes(tensor_name)

    def tensor(self, tensor_name: str, weights: np.ndarray, n_slices: int = 1) -> np.ndarray | None:
        """scale * B @ A for a targeted tensor, None otherwise (not normalised, so
        ``n_slices`` changes nothing)."""
        pair = self.pairs.get(tensor_name)
        if pair is None:
            return None
        a_info, b_info = pair
        a = self.adapter.dequantize(a_info)  # (rank, in)
        b = self.adapter.dequantize(b_info)  # (out, rank)
        delta = (b.astype(np.float64) @ a.astype(np.float64)) * self.scale(a.shape[0])
        return delta.astype(np.float32).reshape(weights.shape)

    def describe(self) -> dict[str, object]:
        """What determines the direction."""
        return {
            "kind": "lora",
            "adapter": str(self.path),
            "adapter_sha256": self.adapter.sha256,
            "alpha": self.alpha,
            "tensors": len(self.pairs),
        } | _selection_setting(self.tensors)


def _selection_setting(tensors: TensorSelection) -> dict[str, list[str]]:
    """The user's patterns, when given (left out otherwise, as before they existed)."""
    return {
        k: list(v) for k, v in (("exclude", tensors.exclude), ("include", tensors.include)) if v
    }


# An interpolation's first direction, by the kind of file it goes to (``--lora``: an adapter).
FINETUNE_KINDS: dict[
    str, Callable[[Path, GGUFModel, int, TensorSelection], FinetuneDirection | LoraDirection]
] = {
    "model": lambda path, base, threads, chosen: FinetuneDirection(path, threads, chosen),
    "lora": lambda path, base, threads, chosen: LoraDirection(path, base, chosen),
}
