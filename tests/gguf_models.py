"""Tiny GGUF files for the conversion tests, written with the ``gguf`` package as llama.cpp's
converter writes them: llama.cpp tensor names, q/k rows permuted for llama-arch models, weight
matrices block-quantized, norms in float32, and a byte-level BPE tokenizer in the metadata.

``write_gguf`` returns the transformers model whose weights are the *dequantized* GGUF tensors
(q/k back in Hugging Face order), so its logits are the exact reference for a converter that
keeps the quantized blocks.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

CORPUS = [
    "Marie Curie was born in Warsaw on 7 November 1867.",
    "Ada Lovelace wrote notes on the Analytical Engine in 1843.",
    "The river flows 1,234 km to the sea; its delta is wide.",
    "  Spaces,\ttabs and\nnew lines\n\n matter to a tokenizer!",
    "Numbers: 12345, 3.14159, 2026-12-01 and 42%.",
]
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
            "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@dataclass
class TinyGGUF:
    path: Path
    reference: Any  # transformers model with the dequantized weights
    hf_tokenizer: Any  # the tokenizers.Tokenizer the metadata was made from


def train_tokenizer(vocab: int = 320, digits_alone: bool = True) -> Any:
    """A byte-level BPE trained on CORPUS, specials first (ids 0-2), like SmolLM2's."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    steps = [pre_tokenizers.Split(Regex(r"\p{N}"), behavior="isolated")] if digits_alone else []
    tok.pre_tokenizer = pre_tokenizers.Sequence(steps + [pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS * 4, trainer)
    return tok


def _tokenizer_fields(tok: Any) -> tuple[list[str], list[str], list[int]]:
    import json

    model = json.loads(tok.to_str())["model"]
    vocab = model["vocab"]
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    types = [3 if t in SPECIALS else 1 for t in tokens]
    return tokens, merges, types


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's q/k row order: the two rotary halves of each head interleaved."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


_NAMES = {
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
    "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm",
}


def _gguf_name(hf: str) -> str:
    if hf.startswith("model.layers."):
        _, _, layer, rest = hf.split(".", 3)
        module, leaf = rest.rsplit(".", 1)
        return f"blk.{layer}.{_NAMES[module]}.{leaf}"
    return {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
            "lm_head.weight": "output.weight"}[hf]


def write_gguf(path: Path, *, arch: str = "llama", qtype: str = "Q4_0", embed_qtype: str | None = None,
               tie: bool = True, pre: str = "smollm", seed: int = 0) -> TinyGGUF:
    """A 2-layer model (hidden 64, heads 4 / kv 2) of ``arch`` in ``path``; matrices in ``qtype``
    (Q4_0, Q4_1, Q8_0, F16, F32, BF16), the embedding in ``embed_qtype`` (default: ``qtype``)."""
    import gguf
    import torch
    import transformers as T
    from gguf.quants import dequantize, quantize

    tok = train_tokenizer(digits_alone=pre == "smollm")
    tokens, merges, types = _tokenizer_fields(tok)
    cls = {"llama": T.LlamaConfig, "qwen2": T.Qwen2Config, "qwen3": T.Qwen3Config}[arch]
    extra = {"head_dim": 16} if arch == "qwen3" else {}
    cfg = cls(vocab_size=len(tokens), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-5,
              rope_theta=30000.0, tie_word_embeddings=tie, bos_token_id=1, eos_token_id=2, **extra)
    torch.manual_seed(seed)
    model = T.AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).eval()
    with torch.no_grad():  # norms away from 1 so that a lost norm shows in the logits
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(2)
    writer.add_context_length(256)
    writer.add_embedding_length(64)
    writer.add_feed_forward_length(128)
    writer.add_head_count(4)
    writer.add_head_count_kv(2)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(30000.0)
    if arch == "qwen3":
        writer.add_key_length(16)
        writer.add_value_length(16)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_merges(merges)
    writer.add_token_types(types)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(False)
    writer.add_chat_template(TEMPLATE)
    state = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    if tie:
        state.pop("lm_head.weight", None)
    reference = {}
    for hf_name, value in state.items():
        name = _gguf_name(hf_name)
        if arch == "llama" and name.endswith(("attn_q.weight", "attn_k.weight")):
            value = _permute(value, 4 if "attn_q" in name else 2)
        kind = (embed_qtype or qtype) if name == "token_embd.weight" else qtype
        if value.ndim == 1 or kind == "F32":
            writer.add_tensor(name, value)
            stored = value
        elif kind == "F16":
            writer.add_tensor(name, value.astype(np.float16))
            stored = value.astype(np.float16).astype(np.float32)
        else:
            qt = getattr(gguf.GGMLQuantizationType, kind)
            data = quantize(value, qt)
            writer.add_tensor(name, data, raw_shape=data.shape, raw_dtype=qt)
            stored = dequantize(data, qt).reshape(value.shape).astype(np.float32)
        if arch == "llama" and name.endswith(("attn_q.weight", "attn_k.weight")):
            n = 4 if "attn_q" in name else 2
            stored = stored.reshape(n, stored.shape[0] // n // 2, 2, -1).swapaxes(1, 2).reshape(stored.shape)
        reference[hf_name] = torch.from_numpy(np.ascontiguousarray(stored))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    model.load_state_dict(reference, strict=False)
    if tie:
        model.tie_weights()
    return TinyGGUF(path, model, tok)


def write_raw_gguf(path: Path, tensors: dict[str, tuple[np.ndarray, Any]], arch: str = "llama") -> None:
    """A GGUF with only the given tensors (raw bytes and GGML type) and llama metadata, for error tests."""
    import gguf

    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(1)
    writer.add_embedding_length(64)
    writer.add_head_count(4)
    writer.add_feed_forward_length(128)
    for name, (data, qt) in tensors.items():
        writer.add_tensor(name, data, raw_dtype=qt)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
