"""GGUF architectures as data: llama.cpp tensor names -> mlx-lm names, metadata -> config.json.

A row per ``general.architecture`` that converts. llama.cpp names are the same for every
llama-like decoder (``blk.N.attn_q``...), so one name table serves all rows; a row says which
mlx-lm ``model_type`` builds it and whether llama.cpp reordered the q/k rows for its rotary
layout (its Hugging Face converter does so for llama-arch models only).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .errors import UnknownArchitectureError
from .gguf_file import GGUFHeader


@dataclass(frozen=True)
class GGUFArch:
    """How to convert one GGUF architecture."""

    arch: str
    model_type: str  # the mlx-lm model that builds it
    permuted_qk: bool  # llama.cpp's convert_hf_to_gguf permuted q/k rows (undo it)


ARCHS = {a.arch: a for a in (
    GGUFArch("llama", "llama", permuted_qk=True),  # Llama, Mistral (v0.1-0.3), SmolLM, TinyLlama
    GGUFArch("mistral", "llama", permuted_qk=True),
    GGUFArch("qwen2", "qwen2", permuted_qk=False),
    GGUFArch("qwen3", "qwen3", permuted_qk=False),
)}

# llama.cpp tensor name (without .weight/.bias/.scales/.biases) -> mlx-lm parameter path.
_BLOCK = {
    "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm",
    "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
}
_TOP = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
_NAME = re.compile(r"^(?:blk\.(\d+)\.)?([a-z_0-9]+)\.(weight|bias|scales|biases)$")


def arch_for(header: GGUFHeader) -> GGUFArch:
    """The row for the file's architecture, or UnknownArchitectureError listing the supported ones."""
    row = ARCHS.get(header.architecture)
    if row is None:
        raise UnknownArchitectureError(
            f"{header.path}: GGUF architecture {header.architecture!r} is not supported; supported: "
            f"{', '.join(sorted(ARCHS))} (other architectures: convert the original Hugging Face checkpoint)"
        )
    return row


def mlx_name(name: str) -> str | None:
    """``blk.3.attn_q.scales`` -> ``model.layers.3.self_attn.q_proj.scales``; None if unknown."""
    match = _NAME.match(name)
    if not match:
        return None
    layer, base, suffix = match.groups()
    if layer is not None:
        target = _BLOCK.get(base)
        return None if target is None else f"model.layers.{layer}.{target}.{suffix}"
    target = _TOP.get(base)
    return None if target is None else f"{target}.{suffix}"


def config_from(header: GGUFHeader, row: GGUFArch, vocab_rows: int) -> dict[str, Any]:
    """config.json for mlx-lm from ``<arch>.*`` metadata; ``vocab_rows``: the embedding's rows."""
    get = header.arch_value
    heads = int(get("attention.head_count"))
    hidden = int(get("embedding_length"))
    config: dict[str, Any] = {
        "model_type": row.model_type,
        "architectures": [f"{row.model_type.capitalize()}ForCausalLM"],
        "hidden_size": hidden,
        "num_hidden_layers": int(get("block_count")),
        "intermediate_size": int(get("feed_forward_length")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(get("attention.head_count_kv", heads)),
        "rms_norm_eps": float(get("attention.layer_norm_rms_epsilon", 1e-6)),
        "rope_theta": float(get("rope.freq_base", 10000.0)),
        "max_position_embeddings": int(get("context_length", 2048)),
        "vocab_size": vocab_rows,
        "tie_word_embeddings": "output.weight" not in header.tensors,
    }
    head_dim = get("attention.key_length")
    if head_dim is not None and int(head_dim) != hidden // heads or row.model_type == "qwen3":
        config["head_dim"] = int(head_dim or hidden // heads)
    if row.model_type == "llama":
        config["attention_bias"] = "blk.0.attn_q.bias" in header.tensors
        config["mlp_bias"] = "blk.0.ffn_up.bias" in header.tensors
    scaling = _rope_scaling(header)
    if scaling:
        config["rope_scaling"] = scaling
    return config


def _rope_scaling(header: GGUFHeader) -> dict[str, Any] | None:
    kind = header.arch_value("rope.scaling.type")
    if "rope_freqs.weight" in header.tensors:
        raise UnknownArchitectureError(
            f"{header.path}: per-frequency rope factors (rope_freqs, Llama 3.1+ style) are not supported yet; "
            "convert the original Hugging Face checkpoint instead"
        )
    if kind in (None, "none"):
        return None
    if kind == "linear":
        return {"type": "linear", "factor": float(header.arch_value("rope.scaling.factor", 1.0))}
    raise UnknownArchitectureError(f"{header.path}: rope scaling {kind!r} is not supported (only linear)")


def unpermute_rows(rows: Any, n_heads: int) -> Any:
    """Undo llama.cpp's q/k row order (pairs interleaved per head) on any row-major array whose
    first axis is heads x head_dim: packed quantized rows, scales and biases alike."""
    shape = rows.shape
    half = shape[0] // n_heads // 2
    return rows.reshape(n_heads, half, 2, *shape[1:]).swapaxes(1, 2).reshape(shape)
