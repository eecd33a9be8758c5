"""The model families conversion supports, as data: one row per config.json ``model_type``.

A row says which MLX class builds the model, how source tensor names map to the MLX names
(regex renames applied in order before the model's own ``sanitize``; a None target drops the
tensor), and where the token embedding / output head and the vocabulary size live, which is all
``<CALL>`` surgery needs. Adding a family that mlx-lm supports is adding a row.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .errors import UnknownArchitectureError

# Buffers that checkpoints sometimes carry and no MLX model wants.
_ROTARY = (r"\.rotary_emb\.inv_freq$", None)


@dataclass(frozen=True)
class Family:
    """How to convert one ``model_type``."""

    model_type: str
    kind: str  # "decoder" (mlx-lm model) or "encoder" (lacy_mlx.encoder BERT)
    mlx_module: str  # mlx_lm.models.<mlx_module> for decoders
    example: str  # a public checkpoint of this family
    renames: tuple[tuple[str, str | None], ...] = (_ROTARY,)
    embed_key: str = "model.embed_tokens.weight"  # MLX name, after renames + sanitize
    lm_head_key: str | None = "lm_head.weight"  # absent from the weights when tied
    vocab_keys: tuple[str, ...] = ("vocab_size",)  # dotted config paths holding the row count
    text_config: str | None = None  # nested config holding the language model's settings
    aliases: tuple[tuple[str, str], ...] = ()  # (key mlx-lm reads, key to copy it from when absent)

    def rename(self, weights: dict[str, Any]) -> dict[str, Any]:
        """Apply the rename table; dropped tensors disappear."""
        out = {}
        for key, value in weights.items():
            for pattern, target in self.renames:
                if re.search(pattern, key):
                    if target is None:
                        key = None
                        break
                    key = re.sub(pattern, target, key)
            if key is not None:
                out[key] = value
        return out


_GEMMA3_MM = (
    (r"^model\.language_model\.", "language_model.model."),  # transformers >= 4.52 layout
    (r"^lm_head\.", "language_model.lm_head."),
    (r"^model\.(vision_tower|multi_modal_projector)\.", None),
    (r"^(vision_tower|multi_modal_projector)\.", None),
    _ROTARY,
)
_BERT = (
    (r"^bert\.", ""),
    (r"^(pooler|cls)\.", None),  # pooler head and MLM head are not part of the encoder
    (r"^embeddings\.position_ids$", None),
    (r"LayerNorm\.gamma$", "LayerNorm.weight"),  # TF-era names
    (r"LayerNorm\.beta$", "LayerNorm.bias"),
)

FAMILIES: dict[str, Family] = {
    f.model_type: f
    for f in (
        Family("llama", "decoder", "llama", "meta-llama/Llama-3.2-1B"),
        Family("mistral", "decoder", "llama", "mistralai/Mistral-7B-v0.1"),
        Family("qwen2", "decoder", "qwen2", "Qwen/Qwen2.5-0.5B"),
        Family("qwen3", "decoder", "qwen3", "Qwen/Qwen3-0.6B"),
        Family("phi3", "decoder", "phi3", "microsoft/Phi-3-mini-4k-instruct"),
        Family("gemma2", "decoder", "gemma2", "google/gemma-2-2b", lm_head_key=None,
               renames=((r"^lm_head\.weight$", None), _ROTARY)),  # always tied in mlx-lm
        Family("gemma3_text", "decoder", "gemma3_text", "google/gemma-3-1b-pt"),
        Family(
            "gemma3", "decoder", "gemma3", "google/gemma-3-4b-pt", renames=_GEMMA3_MM,
            embed_key="language_model.model.embed_tokens.weight",
            lm_head_key="language_model.lm_head.weight",
            vocab_keys=("vocab_size", "text_config.vocab_size"), text_config="text_config",
        ),
        Family(
            "gpt2", "decoder", "gpt2", "openai-community/gpt2",
            renames=((r"^transformer\.", ""), (r"^lm_head\.weight$", None),
                     (r"\.attn\.(masked_bias|bias)$", None)),
            embed_key="model.wte.weight", lm_head_key=None,
            aliases=(("n_ctx", "n_positions"),),  # transformers 5 no longer writes n_ctx
        ),
        Family("bert", "encoder", "bert", "sentence-transformers/all-MiniLM-L6-v2", renames=_BERT,
               embed_key="embeddings.word_embeddings.weight", lm_head_key=None),
    )
}


def supported() -> str:
    """The supported model types, for messages."""
    return ", ".join(sorted(FAMILIES))


def family_for(config: dict[str, Any], config_path: str) -> Family:
    """The family row for a parsed config.json, or UnknownArchitectureError naming the file."""
    model_type = config.get("model_type")
    if model_type in FAMILIES:
        return FAMILIES[model_type]
    archs = config.get("architectures") or []
    raise UnknownArchitectureError(
        f"{config_path}: model_type {model_type!r} (architectures {archs}) is not supported; "
        f"supported model types: {supported()}"
    )


def get_path(config: dict[str, Any], dotted: str) -> Any:
    """config['a']['b'] for 'a.b', or None."""
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def set_path(config: dict[str, Any], dotted: str, value: Any) -> None:
    """Set config['a']['b'] for 'a.b' when the parent exists."""
    *parents, last = dotted.split(".")
    node = config
    for part in parents:
        node = node.get(part)
        if not isinstance(node, dict):
            return
    node[last] = value
