"""The paper's pipeline as an oracle for the quantised route: float weights moved in torch.

The paper perturbs a full-precision checkpoint in torch and answers there. This module
does the same with a GGUF file: every tensor dequantised to float32, moved to
θ + α·d in torch, and greedy answers decoded by ``model.TorchModel`` (the project's own
llama and qwen2 forward pass, Qwen2's biases included) with a KV cache. Nothing is
requantised and llama.cpp only tokenizes.

The direction is transcribed here from the reference code rather than taken from
``weights.directions``, so that the two can be checked against each other: the same
seed stream per tensor (``directions.tensor_stream``, the project's documented seed
format), tensors whose name contains a blacklisted word left alone (the reference's
``norm``), and each other tensor's Gaussian scaled to that tensor's norm,
``d = g * ||W|| / (||g|| + 1e-10)``, the norms taken in float64.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np
import torch

from visage_local.gguf.model import GGUFModel
from visage_local.training.model import KVCache, ModelConfig, TorchModel
from visage_local.weights.directions import tensor_stream

# The reference code's blacklist: a tensor whose lower-case name contains one is not moved.
REFERENCE_BLACKLIST: tuple[str, ...] = ("norm",)


def reference_direction(name: str, weights: np.ndarray, seed: int, index: int) -> np.ndarray:
    """One tensor's layer-normalised Gaussian direction, as the reference code makes it."""
    rows = weights.shape[0] if weights.ndim == 2 else 1
    g = tensor_stream(seed, index, name).standard_normal((rows, weights.size // rows), np.float32)
    g = g.reshape(weights.shape)
    scale = np.linalg.norm(weights.astype(np.float64)) / (
        np.linalg.norm(g.astype(np.float64)) + 1e-10
    )
    return (g * np.float32(scale)).astype(np.float32)


def reference_directions(
    origin: dict[str, np.ndarray],
    seed: int,
    index: int = 0,
    blacklist: Sequence[str] = REFERENCE_BLACKLIST,
) -> dict[str, np.ndarray | None]:
    """Direction ``index`` of ``seed`` on every tensor; None where the blacklist leaves it."""
    return {
        name: None
        if any(word in name.lower() for word in blacklist)
        else reference_direction(name, w, seed, index)
        for name, w in origin.items()
    }


def moved_weights(
    origin: dict[str, np.ndarray], directions: dict[str, np.ndarray | None], alpha: float
) -> dict[str, np.ndarray]:
    """θ + α·d in float32; tensors without a direction as they are."""
    return {
        name: w if directions[name] is None else w + np.float32(alpha) * directions[name]
        for name, w in origin.items()
    }


class FloatRoute:
    """A GGUF model in float32 torch, moved along the reference's random directions (each
    direction drawn once and kept: about the model's size in float32 per direction)."""

    def __init__(self, path: str | os.PathLike, threads: int = 1, seed: int = 123):
        torch.set_num_threads(threads)
        model = GGUFModel(path)
        self.config = ModelConfig.from_gguf(model)
        self.seed = seed
        self.origin = {}
        for info in model.tensors:
            values = model.dequantize(info, threads)
            self.origin[info.name] = values.reshape(-1) if len(info.shape) == 1 else values
        self._directions: dict[int, dict[str, np.ndarray | None]] = {}

    def directions(self, index: int = 0) -> dict[str, np.ndarray | None]:
        """Direction ``index`` of the route's seed on every tensor, drawn once."""
        if index not in self._directions:
            self._directions[index] = reference_directions(self.origin, self.seed, index)
        return self._directions[index]

    def at(self, alpha: float, index: int = 0) -> TorchModel:
        """The model at θ + α·d (direction ``index`` of the route's seed)."""
        model = TorchModel(self.config, moved_weights(self.origin, self.directions(index), alpha))
        model.requires_grad_(False)
        return model


def greedy_answers(
    model: TorchModel,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    is_end: Callable[[int], bool],
    text: Callable[[list[int]], str],
    settled: Callable[[str], bool] | None = None,
) -> list[tuple[list[int], str]]:
    """Greedy tokens after each prompt, decoded together (left-padded, KV-cached). An answer
    stops at an end-of-generation token, at ``max_new_tokens``, or once ``settled(answer so
    far)`` (as the engine stops); the batch runs until every answer has stopped."""
    longest = max(len(p) for p in prompts)
    pads = [longest - len(p) for p in prompts]
    cache = KVCache(model.config.n_layers, pads)
    batch = torch.tensor([[0] * pad + list(p) for pad, p in zip(pads, prompts, strict=True)])
    answers: list[list[int]] = [[] for _ in prompts]
    running = [True] * len(prompts)
    with torch.no_grad():
        logits = model(batch, cache)[:, -1]
        for _ in range(max_new_tokens):
            picked = torch.argmax(logits, dim=-1).tolist()
            for i, token in enumerate(picked):
                if not running[i]:
                    continue
                if is_end(token):
                    running[i] = False
                    continue
                answers[i].append(token)
                if settled is not None and settled(text(answers[i])):
                    running[i] = False
            if not any(running):
                break
            logits = model(torch.tensor(picked)[:, None], cache)[:, -1]
    return [(tokens, text(tokens)) for tokens in answers]
