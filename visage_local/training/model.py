"""A llama- or qwen2-architecture transformer in torch whose weights are a GGUF file's tensors.

Parameters keep their GGUF names and layouts (a linear weight is (rows, values per
row) = (out, in)). Training and export therefore need no name mapping and no
permutation. RoPE is applied as llama.cpp applies it for each architecture: a llama
GGUF stores Q and K rows permuted for the "normal" RoPE (adjacent pairs rotate); a
qwen2 GGUF keeps the checkpoint's order, rotated by NEOX RoPE (the two halves of a
head rotate). Qwen2's Q, K and V biases are added where the file has them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from visage_local.errors import ModelFileError
from visage_local.gguf.model import GGUFModel

LINEAR_SUFFIXES = (
    "attn_q.weight",
    "attn_k.weight",
    "attn_v.weight",
    "attn_output.weight",
    "ffn_gate.weight",
    "ffn_up.weight",
    "ffn_down.weight",
)


# The architectures this module implements, and whether each rotates by NEOX RoPE.
NEOX_ROPE = {"llama": False, "qwen2": True}


@dataclass(frozen=True)
class ModelConfig:
    """The shape of a llama- or qwen2-architecture model, read from GGUF metadata."""

    architecture: str
    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    rope_base: float
    rms_eps: float

    @property
    def head_dim(self) -> int:
        """Values per attention head."""
        return self.d_model // self.n_heads

    @property
    def neox_rope(self) -> bool:
        """True when RoPE rotates the two halves of a head (NEOX), False for adjacent pairs."""
        return NEOX_ROPE[self.architecture]

    @classmethod
    def from_gguf(cls, model: GGUFModel) -> ModelConfig:
        """Read the configuration; refuse architectures (and RoPE scaling) this module
        does not implement."""
        arch = model.architecture
        if arch not in NEOX_ROPE:
            raise ModelFileError(
                f"{model.path}: the torch model implements {' and '.join(NEOX_ROPE)}, not {arch!r}"
            )
        if any(info.name.startswith("rope_") for info in model.tensors) or model.metadata(
            f"{arch}.rope.scaling.type", "none"
        ) not in ("none", None):
            raise ModelFileError(f"{model.path}: RoPE scaling is not implemented in torch")
        n_heads = int(model.metadata(f"{arch}.attention.head_count"))
        return cls(
            architecture=arch,
            n_layers=int(model.metadata(f"{arch}.block_count")),
            d_model=int(model.metadata(f"{arch}.embedding_length")),
            n_heads=n_heads,
            n_kv_heads=int(model.metadata(f"{arch}.attention.head_count_kv", n_heads)),
            rope_base=float(model.metadata(f"{arch}.rope.freq_base", 10000.0)),
            rms_eps=float(model.metadata(f"{arch}.attention.layer_norm_rms_epsilon", 1e-5)),
        )


def _key(name: str) -> str:
    return name.replace(".", "__")


class TorchModel(nn.Module):
    """Causal LM forward pass over GGUF-named parameters, optionally with LoRA on the linears.

    With ``lora_rank`` > 0 the GGUF weights are frozen and each linear weight W is
    used as W + (lora_alpha / rank) * B @ A, B starting at zero.
    """

    def __init__(
        self,
        config: ModelConfig,
        weights: dict[str, np.ndarray],
        lora_rank: int = 0,
        lora_alpha: float = 16.0,
    ):
        super().__init__()
        self.config = config
        self.weights = nn.ParameterDict(
            {
                _key(n): nn.Parameter(torch.from_numpy(np.require(w, np.float32, "CW")))
                for n, w in weights.items()
            }
        )
        self.names = list(weights)
        self.lora_rank = lora_rank
        self.lora_scale = lora_alpha / lora_rank if lora_rank else 0.0
        self.lora = nn.ParameterDict()
        if lora_rank:
            for p in self.weights.values():
                p.requires_grad_(False)
            for name in self.names:
                if name.endswith(LINEAR_SUFFIXES):
                    out_dim, in_dim = weights[name].shape
                    a = torch.randn(lora_rank, in_dim) / np.sqrt(in_dim)
                    self.lora[_key(name) + "__A"] = nn.Parameter(a)
                    self.lora[_key(name) + "__B"] = nn.Parameter(torch.zeros(out_dim, lora_rank))
        half = config.head_dim // 2
        inv_freq = config.rope_base ** (
            -torch.arange(half, dtype=torch.float32) * 2 / config.head_dim
        )
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    @classmethod
    def from_gguf(cls, model: GGUFModel, lora_rank: int = 0, threads: int = 1) -> TorchModel:
        """Dequantize every tensor of a llama GGUF into a trainable float32 model."""
        config = ModelConfig.from_gguf(model)
        weights = {}
        for info in model.tensors:
            values = model.dequantize(info, threads)
            weights[info.name] = values.reshape(-1) if len(info.shape) == 1 else values
        return cls(config, weights, lora_rank=lora_rank)

    def weight(self, name: str) -> torch.Tensor:
        """A weight as used in the forward pass (LoRA update included)."""
        w = self.weights[_key(name)]
        if self.lora_rank and name.endswith(LINEAR_SUFFIXES):
            k = _key(name)
            w = w + self.lora_scale * (self.lora[k + "__B"] @ self.lora[k + "__A"])
        return w

    def merged_weights(self) -> dict[str, np.ndarray]:
        """Every tensor by its GGUF name, LoRA merged in, as float32 numpy arrays."""
        with torch.no_grad():
            return {n: self.weight(n).detach().cpu().numpy().astype(np.float32) for n in self.names}

    def _rms_norm(self, x: torch.Tensor, name: str) -> torch.Tensor:
        scale = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.config.rms_eps)
        return x * scale * self.weights[_key(name)]

    def _rope(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        # x: (batch, heads, time, head_dim), positions (batch or 1, time); llama.cpp's normal
        # RoPE rotates pairs (2i, 2i+1), its NEOX RoPE pairs (i, i + head_dim / 2)
        angles = positions[:, None, :, None].float() * self.inv_freq
        cos, sin = angles.cos(), angles.sin()
        if self.config.neox_rope:
            first, second = x.chunk(2, dim=-1)
            return torch.cat((first * cos - second * sin, first * sin + second * cos), dim=-1)
        even, odd = x[..., 0::2], x[..., 1::2]
        rotated = torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1)
        return rotated.flatten(-2)

    def _linear(self, x: torch.Tensor, name: str) -> torch.Tensor:
        bias = name.removesuffix(".weight") + ".bias"
        return F.linear(x, self.weight(name), self.weights[_key(bias)] if bias in self else None)

    def __contains__(self, name: str) -> bool:
        return _key(name) in self.weights

    def _attention(
        self,
        x: torch.Tensor,
        layer: int,
        positions: torch.Tensor,
        cache: KVCache | None,
        mask: torch.Tensor | None,
    ) -> torch.Tensor:
        c = self.config
        b, t, _ = x.shape
        p = f"blk.{layer}."
        q = self._linear(x, p + "attn_q.weight").view(b, t, c.n_heads, c.head_dim)
        k = self._linear(x, p + "attn_k.weight").view(b, t, c.n_kv_heads, c.head_dim)
        v = self._linear(x, p + "attn_v.weight").view(b, t, c.n_kv_heads, c.head_dim)
        q, k, v = (y.transpose(1, 2) for y in (q, k, v))
        q, k = self._rope(q, positions), self._rope(k, positions)
        if cache is not None:
            k, v = cache.extend(layer, k, v)
        group = c.n_heads // c.n_kv_heads
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None)
        out = out.transpose(1, 2).reshape(b, t, c.d_model)
        return self._linear(out, p + "attn_output.weight")

    def _mlp(self, x: torch.Tensor, layer: int) -> torch.Tensor:
        p = f"blk.{layer}."
        gate = self._linear(x, p + "ffn_gate.weight")
        up = self._linear(x, p + "ffn_up.weight")
        return self._linear(F.silu(gate) * up, p + "ffn_down.weight")

    def hidden_states(self, tokens: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """Final normalised hidden states (batch, time, d_model) for right-padded token ids;
        with ``cache``, the tokens follow the cached ones (left-padded by ``cache.pads``)
        and their keys and values join it."""
        embeddings = self.weights[_key("token_embd.weight")]
        x = F.embedding(tokens, embeddings)
        positions, mask = torch.arange(tokens.shape[1])[None, :], None
        if cache is not None:
            positions, mask = cache.positions_and_mask(tokens.shape[1])
        for layer in range(self.config.n_layers):
            x = x + self._attention(
                self._rms_norm(x, f"blk.{layer}.attn_norm.weight"), layer, positions, cache, mask
            )
            x = x + self._mlp(self._rms_norm(x, f"blk.{layer}.ffn_norm.weight"), layer)
        if cache is not None:
            cache.length += tokens.shape[1]
        return self._rms_norm(x, "output_norm.weight")

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits from hidden states (the output matrix, or the tied embeddings)."""
        name = "output.weight" if "output.weight" in self.names else "token_embd.weight"
        return F.linear(hidden, self.weight(name))

    def forward(self, tokens: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """Logits (batch, time, vocab) for right-padded token ids (batch, time)."""
        return self.head(self.hidden_states(tokens, cache))


class KVCache:
    """Keys and values of the tokens already fed, per layer, for decoding a token at a time.

    Row i of a batch is left-padded by ``pads[i]`` tokens: its positions count from its
    first real token, and no real token attends to a pad (a pad attends to itself only, so
    that no row of the attention is empty).
    """

    def __init__(self, n_layers: int, pads: Sequence[int] = (0,)):
        self.layers: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * n_layers
        self.pads = torch.tensor(list(pads))
        self.length = 0

    def positions_and_mask(self, new: int) -> tuple[torch.Tensor, torch.Tensor]:
        """RoPE positions (batch, new) of the next ``new`` tokens and their attention mask
        (batch, 1, new, keys): causal, pads hidden."""
        queries = torch.arange(self.length, self.length + new)
        keys = torch.arange(self.length + new)
        positions = (queries[None, :] - self.pads[:, None]).clamp(min=0)
        causal = keys[None, :] <= queries[:, None]
        real = keys[None, None, :] >= self.pads[:, None, None]
        itself = keys[None, :] == queries[:, None]
        return positions, ((causal[None] & real) | itself[None])[:, None]

    def extend(
        self, layer: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Append one layer's new keys and values; the layer's keys and values so far."""
        held = self.layers[layer]
        if held is not None:
            k, v = torch.cat((held[0], k), dim=2), torch.cat((held[1], v), dim=2)
        self.layers[layer] = (k, v)
        return k, v
