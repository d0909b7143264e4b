"""Random-weight GGUF models with real architectures' tensor names, shapes and metadata.

No downloadable model small enough for CI covers every architecture people upload
(Llama 3.x with ``rope_freqs``, Qwen3 and its MoE, Gemma 2/3, Phi-3 with RoPE
factors, Mixtral, gpt-oss). ``write_model`` writes one with gguf-py: the tensor
names, shapes and metadata keys llama.cpp's loader asks for, at a size given by a
``Size``, random weights, and a byte-level tokenizer (256 byte tokens and the
chat template's special tokens) so llama.cpp loads it and generates. ``requantize``
then re-encodes it with llama.cpp's own quantiser (``llama_model_quantize``) into
the types uploads use, as their makers did.

The models generate noise; they prove that a file of the architecture and type
opens, is read, perturbed, written back and run, not what any model answers.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType, GGUFWriter

from visage_local.gguf import ggml, quant
from visage_local.gguf.model import GGUFModel, write_retyped


@dataclass(frozen=True)
class Size:
    """The dimensions of a synthetic model (defaults: tiny, yet a multiple of 256 wide so
    K- and IQ-quants encode every matrix)."""

    n_embd: int = 256
    n_layer: int = 2
    n_head: int = 4
    n_head_kv: int = 2
    head_dim: int = 64
    n_ff: int = 256
    n_expert: int = 4
    n_expert_used: int = 2
    n_ff_expert: int = 256
    context: int = 4096
    n_vocab: int = 0  # 0: the byte-level tokenizer's own tokens; more: padded to this many
    tied: bool | None = None  # output shares token_embd; None: as the architecture has it
    rope_theta: float = 10000.0


# ChatML, as Qwen2.5 has it: the default template of synthetic models.
CHATML_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
# A Qwen3-style chat template: `enable_thinking=False` adds an empty reasoning block.
QWEN3_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}{%- endif %}"
)
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>")


@dataclass(frozen=True)
class Architecture:
    """What one architecture's GGUF holds: its name in the file, its metadata, its tensors
    (name -> numpy shape, rows first) for a given size."""

    name: str
    arch: str
    metadata: Callable[[Size], dict[str, object]]
    tensors: Callable[[Size], dict[str, tuple[int, ...]]]
    tokenizer: str = "gpt2"


def _attention_keys(arch: str, s: Size) -> dict[str, object]:
    return {
        f"{arch}.context_length": s.context,
        f"{arch}.embedding_length": s.n_embd,
        f"{arch}.block_count": s.n_layer,
        f"{arch}.feed_forward_length": s.n_ff,
        f"{arch}.attention.head_count": s.n_head,
        f"{arch}.attention.head_count_kv": s.n_head_kv,
        f"{arch}.attention.key_length": s.head_dim,
        f"{arch}.attention.value_length": s.head_dim,
        f"{arch}.rope.dimension_count": s.head_dim,
        f"{arch}.rope.freq_base": s.rope_theta,
        f"{arch}.attention.layer_norm_rms_epsilon": 1e-6,
    }


def _moe_keys(arch: str, s: Size) -> dict[str, object]:
    return {
        f"{arch}.expert_count": s.n_expert,
        f"{arch}.expert_used_count": s.n_expert_used,
        f"{arch}.expert_feed_forward_length": s.n_ff_expert,
    }


def _attention(s: Size, i: int, bias: bool = False, qk_norm: bool = False) -> dict:
    q, kv = s.n_head * s.head_dim, s.n_head_kv * s.head_dim
    out = {
        f"blk.{i}.attn_norm.weight": (s.n_embd,),
        f"blk.{i}.attn_q.weight": (q, s.n_embd),
        f"blk.{i}.attn_k.weight": (kv, s.n_embd),
        f"blk.{i}.attn_v.weight": (kv, s.n_embd),
        f"blk.{i}.attn_output.weight": (s.n_embd, q),
    }
    if bias:
        out |= {f"blk.{i}.attn_{x}.bias": (n,) for x, n in (("q", q), ("k", kv), ("v", kv))}
    if qk_norm:
        out |= {f"blk.{i}.attn_q_norm.weight": (s.head_dim,)}
        out |= {f"blk.{i}.attn_k_norm.weight": (s.head_dim,)}
    return out


def _mlp(s: Size, i: int) -> dict:
    return {
        f"blk.{i}.ffn_norm.weight": (s.n_embd,),
        f"blk.{i}.ffn_gate.weight": (s.n_ff, s.n_embd),
        f"blk.{i}.ffn_up.weight": (s.n_ff, s.n_embd),
        f"blk.{i}.ffn_down.weight": (s.n_embd, s.n_ff),
    }


def _experts(s: Size, i: int, bias: bool = False) -> dict:
    e, f = s.n_expert, s.n_ff_expert
    out = {
        f"blk.{i}.ffn_norm.weight": (s.n_embd,),
        f"blk.{i}.ffn_gate_inp.weight": (e, s.n_embd),
        f"blk.{i}.ffn_gate_exps.weight": (e, f, s.n_embd),
        f"blk.{i}.ffn_up_exps.weight": (e, f, s.n_embd),
        f"blk.{i}.ffn_down_exps.weight": (e, s.n_embd, f),
    }
    if bias:
        out |= {f"blk.{i}.ffn_gate_inp.bias": (e,)}
        out |= {f"blk.{i}.ffn_{x}_exps.bias": (e, f) for x in ("gate", "up")}
        out |= {f"blk.{i}.ffn_down_exps.bias": (e, s.n_embd)}
    return out


def _ends(s: Size, output: bool = True) -> dict:
    vocab = s.n_vocab or N_VOCAB
    out = {"token_embd.weight": (vocab, s.n_embd), "output_norm.weight": (s.n_embd,)}
    output = output if s.tied is None else not s.tied
    return out | ({"output.weight": (vocab, s.n_embd)} if output else {})


def _layers(s: Size, block: Callable[[int], dict]) -> dict:
    out: dict = {}
    for i in range(s.n_layer):
        out |= block(i)
    return out


def _llama_tensors(s: Size) -> dict:
    rope = {"rope_freqs.weight": (s.head_dim // 2,)}
    return _ends(s) | rope | _layers(s, lambda i: _attention(s, i) | _mlp(s, i))


def _mixtral_tensors(s: Size) -> dict:
    return _ends(s) | _layers(s, lambda i: _attention(s, i) | _experts(s, i))


def _qwen2_tensors(s: Size) -> dict:
    return _ends(s, output=False) | _layers(s, lambda i: _attention(s, i, bias=True) | _mlp(s, i))


def _qwen3_tensors(s: Size) -> dict:
    return _ends(s) | _layers(s, lambda i: _attention(s, i, qk_norm=True) | _mlp(s, i))


def _qwen3moe_tensors(s: Size) -> dict:
    return _ends(s) | _layers(s, lambda i: _attention(s, i, qk_norm=True) | _experts(s, i))


def _gemma_tensors(qk_norm: bool) -> Callable[[Size], dict]:
    def tensors(s: Size) -> dict:
        def block(i: int) -> dict:
            post = {
                f"blk.{i}.post_attention_norm.weight": (s.n_embd,),
                f"blk.{i}.post_ffw_norm.weight": (s.n_embd,),
            }
            return _attention(s, i, qk_norm=qk_norm) | _mlp(s, i) | post

        return _ends(s, output=False) | _layers(s, block)

    return tensors


def _phi3_tensors(s: Size) -> dict:
    q, kv = s.n_head * s.head_dim, s.n_head_kv * s.head_dim
    rope = {f"rope_factors_{x}.weight": (s.head_dim // 2,) for x in ("long", "short")}

    def block(i: int) -> dict:
        return {
            f"blk.{i}.attn_norm.weight": (s.n_embd,),
            f"blk.{i}.attn_qkv.weight": (q + 2 * kv, s.n_embd),
            f"blk.{i}.attn_output.weight": (s.n_embd, q),
            f"blk.{i}.ffn_norm.weight": (s.n_embd,),
            f"blk.{i}.ffn_up.weight": (2 * s.n_ff, s.n_embd),
            f"blk.{i}.ffn_down.weight": (s.n_embd, s.n_ff),
        }

    return _ends(s) | rope | _layers(s, block)


def _gpt_oss_tensors(s: Size) -> dict:
    def block(i: int) -> dict:
        attention = _attention(s, i, bias=True)
        attention |= {
            f"blk.{i}.attn_output.bias": (s.n_embd,),
            f"blk.{i}.attn_sinks.weight": (s.n_head,),
            f"blk.{i}.post_attention_norm.weight": (s.n_embd,),
        }
        experts = _experts(s, i, bias=True)
        del experts[f"blk.{i}.ffn_norm.weight"]
        return attention | experts

    return _ends(s) | _layers(s, block)


def _keys(arch: str, *extra: Callable[[str, Size], dict]) -> Callable[[Size], dict]:
    def keys(s: Size) -> dict:
        out = _attention_keys(arch, s)
        for part in extra:
            out |= part(arch, s)
        return out

    return keys


def _mixtral_keys(arch: str, s: Size) -> dict:
    """Mixtral's experts are as wide as its feed_forward_length says."""
    return _moe_keys(arch, s) | {f"{arch}.feed_forward_length": s.n_ff_expert}


def _gemma2_keys(arch: str, s: Size) -> dict:
    return {
        f"{arch}.attn_logit_softcapping": 50.0,
        f"{arch}.final_logit_softcapping": 30.0,
        f"{arch}.attention.sliding_window": 128,
    }


def _sliding(arch: str, s: Size) -> dict:
    return {f"{arch}.attention.sliding_window": 128}


def _phi3_keys(arch: str, s: Size) -> dict:
    return {f"{arch}.rope.scaling.original_context_length": s.context // 2}


ARCHITECTURES: dict[str, Architecture] = {
    a.name: a
    for a in (
        Architecture("llama3", "llama", _keys("llama"), _llama_tensors),
        Architecture("mixtral", "llama", _keys("llama", _mixtral_keys), _mixtral_tensors),
        Architecture("qwen2", "qwen2", _keys("qwen2"), _qwen2_tensors),
        Architecture("qwen3", "qwen3", _keys("qwen3"), _qwen3_tensors),
        Architecture("qwen3moe", "qwen3moe", _keys("qwen3moe", _moe_keys), _qwen3moe_tensors),
        Architecture("gemma2", "gemma2", _keys("gemma2", _gemma2_keys), _gemma_tensors(False)),
        Architecture("gemma3", "gemma3", _keys("gemma3", _sliding), _gemma_tensors(True)),
        Architecture("phi3", "phi3", _keys("phi3", _sliding, _phi3_keys), _phi3_tensors, "llama"),
        Architecture("gpt-oss", "gpt-oss", _keys("gpt-oss", _moe_keys, _sliding), _gpt_oss_tensors),
    )
}


def _byte_tokens() -> list[str]:
    """GPT-2's printable stand-ins for the 256 bytes, in byte order."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    chars, extra = [], 0
    for b in range(256):
        if b in printable:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


# Both tokenizers have this many tokens: the 256 bytes, one merge, and special tokens.
N_VOCAB = 257 + len(SPECIAL_TOKENS)
SPM_SPECIAL = ("<unk>", "<s>", "</s>", "<|end|>", "<|endoftext|>")


def _tokenizer(writer: GGUFWriter, kind: str, template: str, n_vocab: int = 0) -> None:
    """A byte-level tokenizer llama.cpp accepts: GPT-2 BPE (``gpt2``) or SentencePiece
    (``llama``, as Phi-3 and Mistral files have); with ``n_vocab``, padded with tokens no
    merge reaches to that many (the real model's embedding and output sizes)."""
    writer.add_tokenizer_model(kind)
    padding = max(0, n_vocab - N_VOCAB)
    if kind == "gpt2":
        writer.add_tokenizer_pre("default")
        fill = [f"\u0120t{i}" for i in range(padding)]
        writer.add_token_list([*_byte_tokens(), "\u0120t", *SPECIAL_TOKENS, *fill])
        writer.add_token_types([1] * 257 + [3] * len(SPECIAL_TOKENS) + [1] * padding)
        writer.add_token_merges(["\u0120 t"])  # llama.cpp wants at least one merge
        writer.add_bos_token_id(257)
        writer.add_eos_token_id(257 + SPECIAL_TOKENS.index("<|im_end|>"))
    else:
        tokens = [*SPM_SPECIAL[:3], *(f"<0x{b:02X}>" for b in range(256)), "\u2581t"]
        tokens += [*SPM_SPECIAL[3:], *(f"\u2581t{i}" for i in range(padding))]
        writer.add_token_list(tokens)
        writer.add_token_scores([0.0] * len(tokens))
        writer.add_token_types(
            [2, 3, 3] + [6] * 256 + [1] + [3] * (len(SPM_SPECIAL) - 3) + [1] * padding
        )
        writer.add_bos_token_id(1)
        writer.add_eos_token_id(2)
    writer.add_add_bos_token(False)
    writer.add_chat_template(template)


def write_model(
    path: str | os.PathLike,
    architecture: str,
    size: Size = Size(),
    seed: int = 0,
    template: str = CHATML_TEMPLATE,
) -> Path:
    """Write a random-weight F32/F16 model of ``architecture`` (a key of ARCHITECTURES):
    matrices in F16, vectors in F32, norms 1. Tensors are drawn and written one at a
    time, so an 8B model needs memory for its largest tensor, not for the model."""
    spec = ARCHITECTURES[architecture]
    rng = np.random.default_rng(seed)
    writer = GGUFWriter(str(path), spec.arch)
    writer.add_name(f"synthetic {architecture}")
    writer.add_file_type(1)  # mostly F16
    for key, value in spec.metadata(size).items():
        _add_key(writer, key, value)
    _tokenizer(writer, spec.tokenizer, template, size.n_vocab)
    shapes = spec.tensors(size)
    for name, shape in shapes.items():
        dtype = np.float16 if _is_matrix(name, shape) else np.float32
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        writer.add_tensor_info(name, shape, np.dtype(dtype), nbytes)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for name, shape in shapes.items():
        if "norm" in name or name.startswith("rope_"):
            values = np.ones(shape, dtype=np.float32)
        else:
            values = rng.standard_normal(shape, dtype=np.float32)
            values *= 0.05
        writer.write_tensor_data(values.astype(np.float16) if _is_matrix(name, shape) else values)
    writer.close()
    return Path(path)


def _is_matrix(name: str, shape: tuple[int, ...]) -> bool:
    """Weight matrices are written in F16; vectors, norms and biases in F32."""
    return len(shape) > 1 and name.endswith(".weight") and "norm" not in name


# Real models' shapes (config.json of each on the Hugging Face hub): the architecture and
# the size that give their tensors, vocabulary and KV cache exactly.
SCALES: dict[str, tuple[str, Size]] = {
    "llama-3.2-1b": ("llama3", Size(n_embd=2048, n_layer=16, n_head=32, n_head_kv=8,
                                    head_dim=64, n_ff=8192, n_vocab=128256, tied=True,
                                    rope_theta=500000.0, context=8192)),
    "llama-3.2-3b": ("llama3", Size(n_embd=3072, n_layer=28, n_head=24, n_head_kv=8,
                                    head_dim=128, n_ff=8192, n_vocab=128256, tied=True,
                                    rope_theta=500000.0, context=8192)),
    "llama-3.1-8b": ("llama3", Size(n_embd=4096, n_layer=32, n_head=32, n_head_kv=8,
                                    head_dim=128, n_ff=14336, n_vocab=128256, tied=False,
                                    rope_theta=500000.0, context=8192)),
    "qwen2.5-7b": ("qwen2", Size(n_embd=3584, n_layer=28, n_head=28, n_head_kv=4,
                                 head_dim=128, n_ff=18944, n_vocab=152064, tied=False,
                                 rope_theta=1000000.0, context=8192)),
}  # fmt: skip


def parameter_count(architecture: str, size: Size) -> int:
    """Values in the model's tensors (what its name's "1B" or "8B" counts)."""
    return sum(int(np.prod(s)) for s in ARCHITECTURES[architecture].tensors(size).values())


def _add_key(writer: GGUFWriter, key: str, value: object) -> None:
    if isinstance(value, bool):
        writer.add_bool(key, value)
    elif isinstance(value, int):
        writer.add_uint32(key, value)
    elif isinstance(value, float):
        writer.add_float32(key, value)
    else:
        writer.add_string(key, str(value))


# Tensor types of the upload types that need an importance matrix (quantize.NEEDS_IMATRIX):
# ``encode`` writes them with ggml's encoder and a uniform one, with no importance matrix file.
IMATRIX_TYPES = ("IQ2_S", "IQ2_XS", "IQ2_XXS", "IQ1_M", "IQ1_S", "IQ3_XXS")


def encode(source: str | os.PathLike, out: str | os.PathLike, qtype: str, threads: int = 2) -> Path:
    """``source`` with every weight matrix whose rows fit the type's blocks encoded in ``qtype`` by
    ggml's own encoder (a uniform importance matrix where ggml needs one); other tensors
    keep their types. For the types ``quantize_model`` makes only with an importance matrix."""
    model = GGUFModel(source)
    target = GGMLQuantizationType[qtype]
    retype = {
        t.name: target
        for t in model.tensors
        if t.name.endswith(".weight")  # biases stay F32, as llama.cpp's quantiser keeps them
        and len(t.shape) > 1
        and t.n_per_row % ggml.block_size(int(target)) == 0
    }

    def data(info):
        if info.name not in retype:
            return model.raw(info)
        return quant.quantize(model.dequantize(info, threads), target, threads)

    write_retyped(model, Path(out), retype, data)
    return Path(out)
