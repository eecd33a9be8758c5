"""Tiny random Hugging Face checkpoints for the conversion tests, built once per session.

Each family gets a 2-layer model (hidden 64, vocab 64) saved twice: as model.safetensors
(save_pretrained) and as a raw ``torch.save`` of its state dict named pytorch_model.bin, both
with a tiny WordLevel tokenizer. Configs come from ``AutoConfig.for_model`` with tiny sizes plus
a few non-default settings per family (rope bases, partial rotary, multipliers) that catch
transformers-5 keys mlx-lm would otherwise ignore.
"""
from __future__ import annotations

import atexit
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path

import numpy as np

VOCAB = 64
_ROOT = Path(tempfile.mkdtemp(prefix="lacy-convert-tests-"))
atexit.register(shutil.rmtree, _ROOT, True)

# Decoder families both transformers and mlx-lm implement, spread over attention (MHA/GQA/MQA,
# fused qkv, parallel blocks, sliding windows, SSM, hybrid), norms, MLPs (dense, MoE) and
# position schemes (rotary, partial, NoPE layers, learned).
DECODERS = ("llama", "mistral", "qwen2", "qwen3", "phi3", "gemma2", "gemma3_text", "gemma3", "gpt2",
            "phi", "gpt_neox", "starcoder2", "olmo2", "stablelm", "cohere", "granite", "nemotron",
            "smollm3", "cohere2", "gpt_bigcode", "mamba", "falcon_h1", "mixtral", "qwen3_moe")

# Settings off their defaults, per family, so a key the converter fails to carry shows in logits.
_EXTRA = {
    "llama": dict(rope_theta=50000.0),
    "mistral": dict(rope_theta=20000.0),
    "qwen2": dict(rope_theta=30000.0),
    "qwen3": dict(head_dim=16, rope_theta=40000.0),
    "phi3": dict(rope_theta=25000.0),
    "gemma2": dict(head_dim=16, query_pre_attn_scalar=16, rope_theta=15000.0),
    "gemma3_text": dict(head_dim=16, query_pre_attn_scalar=16, rope_theta=60000.0,
                        layer_types=["sliding_attention", "full_attention"]),
    "phi": dict(rope_theta=20000.0, partial_rotary_factor=0.5),
    "gpt_neox": dict(rope_theta=20000.0, partial_rotary_factor=0.25, use_parallel_residual=True,
                     intermediate_size=256),  # mlx-lm assumes 4 x hidden, as Pythia has
    "starcoder2": dict(rope_theta=30000.0),
    "olmo2": dict(rope_theta=40000.0),
    "stablelm": dict(rope_theta=25000.0, partial_rotary_factor=0.25),
    "cohere": dict(rope_theta=15000.0, logit_scale=0.5),
    "granite": dict(rope_theta=35000.0, embedding_multiplier=2.0, residual_multiplier=0.5,
                    attention_multiplier=0.2, logits_scaling=4.0),
    "nemotron": dict(rope_theta=45000.0, partial_rotary_factor=0.5),
    "smollm3": dict(rope_theta=55000.0, no_rope_layer_interval=2),
    "falcon_h1": dict(rope_theta=35000.0, head_dim=16, mamba_d_ssm=64, mamba_n_heads=4, mamba_d_state=8,
                      mamba_chunk_size=8, embedding_multiplier=2.0, lm_head_multiplier=0.5),
    "cohere2": dict(rope_theta=12000.0, sliding_window=16, layer_types=["sliding_attention", "full_attention"]),
    "gpt_bigcode": dict(n_inner=128, multi_query=True),  # transformers' default n_inner is None
    "mixtral": dict(rope_theta=25000.0, num_local_experts=4, num_experts_per_tok=2),
    "qwen3_moe": dict(head_dim=16, rope_theta=45000.0, num_experts=4, num_experts_per_tok=2,
                      moe_intermediate_size=32),
}


def _common(vocab: int, **extra):
    base = dict(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                pad_token_id=3, bos_token_id=1, eos_token_id=2)
    base.update(extra)
    return base


def hf_config(family: str, vocab: int = VOCAB, tie: bool | None = None):
    """A tiny transformers config for ``family`` (transformers 5 spelling)."""
    import transformers as T

    tied = {} if tie is None else {"tie_word_embeddings": tie}
    if family == "gpt2":
        return T.GPT2Config(vocab_size=vocab, n_embd=64, n_layer=2, n_head=4, n_positions=128,
                            bos_token_id=1, eos_token_id=2, **tied)
    if family == "bert":
        return T.BertConfig(vocab_size=vocab, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                            intermediate_size=128, max_position_embeddings=64, pad_token_id=3)
    if family == "gemma3":  # the multimodal wrapper: a tiny SigLIP tower the converter drops
        vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                      image_size=28, patch_size=14)
        return T.Gemma3Config(text_config=hf_config("gemma3_text", vocab, tie).to_dict(), vision_config=vision,
                              mm_tokens_per_image=4, image_token_index=5, boi_token_index=6, eoi_token_index=7)
    if family == "mamba":
        return T.MambaConfig(vocab_size=vocab, hidden_size=64, state_size=8, num_hidden_layers=2,
                             pad_token_id=3, bos_token_id=1, eos_token_id=2, **tied)
    return T.AutoConfig.for_model(family, **_common(vocab, **_EXTRA.get(family, {}), **tied))


def write_tokenizer(folder: Path, n_tokens: int = VOCAB) -> None:
    """A WordLevel tokenizer with ``n_tokens`` ids: <unk> <s> </s> <pad> w4 w5 ..."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "<pad>": 3} | {f"w{i}": i for i in range(4, n_tokens)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>",
                                   eos_token="</s>", pad_token="<pad>")
    fast.save_pretrained(str(folder))


def checkpoint(family: str, *, vocab: int = VOCAB, n_tokens: int = VOCAB, tie: bool | None = None):
    """(safetensors folder, .bin folder, torch model) for a seeded tiny model of ``family``."""
    return _checkpoint(family, vocab, n_tokens, tie)


@lru_cache(maxsize=None)
def _checkpoint(family: str, vocab: int, n_tokens: int, tie: bool | None):
    import torch
    import transformers as T

    torch.manual_seed(0)
    cfg = hf_config(family, vocab, tie)
    auto = {"bert": T.AutoModel, "gemma3": T.Gemma3ForConditionalGeneration}.get(family, T.AutoModelForCausalLM)
    model = (auto(cfg) if family == "gemma3" else auto.from_config(cfg)).eval()
    tag = f"{family}-v{vocab}-t{n_tokens}-{tie}"
    st, pt = _ROOT / f"{tag}-st", _ROOT / f"{tag}-bin"
    model.save_pretrained(str(st))
    pt.mkdir()
    shutil.copy(st / "config.json", pt / "config.json")
    torch.save(model.state_dict(), pt / "pytorch_model.bin")
    for folder in (st, pt):
        write_tokenizer(folder, n_tokens)
    return st, pt, model


def fresh_copy(folder: Path, name: str) -> Path:
    """A private copy of a cached checkpoint folder that a test may damage."""
    dst = _ROOT / "copies" / name
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(folder, dst)
    return dst


PROBE = [[1, 5, 9, 14, 22, 31, 40, 47, 53, 60, 7, 2]]


def torch_logits(model, ids=PROBE) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(torch.tensor(ids)).logits.float().numpy()


def mlx_logits(model, ids=PROBE) -> np.ndarray:
    import mlx.core as mx

    return np.array(model(mx.array(ids)).astype(mx.float32))
