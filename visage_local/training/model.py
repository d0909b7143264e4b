"""A llama-architecture transformer in torch whose weights are a GGUF file's tensors.

Parameters keep their GGUF names and layouts (a linear weight is (rows, values per
row) = (out, in); Q and K rows are in llama.cpp's order, so RoPE rotates adjacent
pairs as llama.cpp's "normal" RoPE does). Training and export therefore need no
name mapping and no permutation.
"""

from __future__ import annotations

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


@dataclass(frozen=True)
class LlamaConfig:
    """The shape of a llama-architecture model, read from GGUF metadata."""

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

    @classmethod
    def from_gguf(cls, model: GGUFModel) -> LlamaConfig:
        """Read the configuration; refuse architectures this module does not implement."""
        arch = model.architecture
        if arch != "llama":
            raise ModelFileError(
                f"{model.path}: training supports the llama architecture, not {arch!r}"
            )
        n_heads = int(model.metadata("llama.attention.head_count"))
        return cls(
            n_layers=int(model.metadata("llama.block_count")),
            d_model=int(model.metadata("llama.embedding_length")),
            n_heads=n_heads,
            n_kv_heads=int(model.metadata("llama.attention.head_count_kv", n_heads)),
            rope_base=float(model.metadata("llama.rope.freq_base", 10000.0)),
            rms_eps=float(model.metadata("llama.attention.layer_norm_rms_epsilon", 1e-5)),
        )


def _key(name: str) -> str:
    return name.replace(".", "__")


class LlamaModel(nn.Module):
    """Causal LM forward pass over GGUF-named parameters, optionally with LoRA on the linears.

    With ``lora_rank`` > 0 the GGUF weights are frozen and each linear weight W is
    used as W + (lora_alpha / rank) * B @ A, B starting at zero.
    """

    def __init__(
        self,
        config: LlamaConfig,
        weights: dict[str, np.ndarray],
        lora_rank: int = 0,
        lora_alpha: float = 16.0,
    ):
        super().__init__()
        self.config = config
        self.weights = nn.ParameterDict(
            {
                _key(n): nn.Parameter(torch.from_numpy(np.array(w, dtype=np.float32)))
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
    def from_gguf(cls, model: GGUFModel, lora_rank: int = 0, threads: int = 1) -> LlamaModel:
        """Dequantize every tensor of a llama GGUF into a trainable float32 model."""
        config = LlamaConfig.from_gguf(model)
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
        # x: (batch, heads, time, head_dim); rotate pairs (2i, 2i+1) as llama.cpp's normal RoPE
        angles = positions[:, None].float() * self.inv_freq[None, :]
        cos, sin = angles.cos(), angles.sin()
        even, odd = x[..., 0::2], x[..., 1::2]
        rotated = torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1)
        return rotated.flatten(-2)

    def _attention(self, x: torch.Tensor, layer: int, positions: torch.Tensor) -> torch.Tensor:
        c = self.config
        b, t, _ = x.shape
        p = f"blk.{layer}."
        q = F.linear(x, self.weight(p + "attn_q.weight")).view(b, t, c.n_heads, c.head_dim)
        k = F.linear(x, self.weight(p + "attn_k.weight")).view(b, t, c.n_kv_heads, c.head_dim)
        v = F.linear(x, self.weight(p + "attn_v.weight")).view(b, t, c.n_kv_heads, c.head_dim)
        q, k, v = (y.transpose(1, 2) for y in (q, k, v))
        q, k = self._rope(q, positions), self._rope(k, positions)
        group = c.n_heads // c.n_kv_heads
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        out = out.transpose(1, 2).reshape(b, t, c.d_model)
        return F.linear(out, self.weight(p + "attn_output.weight"))

    def _mlp(self, x: torch.Tensor, layer: int) -> torch.Tensor:
        p = f"blk.{layer}."
        gate = F.linear(x, self.weight(p + "ffn_gate.weight"))
        up = F.linear(x, self.weight(p + "ffn_up.weight"))
        return F.linear(F.silu(gate) * up, self.weight(p + "ffn_down.weight"))

    def hidden_states(self, tokens: torch.Tensor) -> torch.Tensor:
        """Final normalised hidden states (batch, time, d_model) for right-padded token ids."""
        embeddings = self.weights[_key("token_embd.weight")]
        x = F.embedding(tokens, embeddings)
        positions = torch.arange(tokens.shape[1])
        for layer in range(self.config.n_layers):
            x = x + self._attention(
                self._rms_norm(x, f"blk.{layer}.attn_norm.weight"), layer, positions
            )
            x = x + self._mlp(self._rms_norm(x, f"blk.{layer}.ffn_norm.weight"), layer)
        return self._rms_norm(x, "output_norm.weight")

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits from hidden states (the output matrix, or the tied embeddings)."""
        name = "output.weight" if "output.weight" in self.names else "token_embd.weight"
        return F.linear(hidden, self.weight(name))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits (batch, time, vocab) for right-padded token ids (batch, time)."""
        return self.head(self.hidden_states(tokens))
