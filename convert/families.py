"""What conversion does beyond mlx-lm, as data: one row per ``model_type`` that needs it.

Decoders need no row: ``decoder.build_model`` resolves any ``model_type`` the way ``mlx_lm.load``
does and the model class's own ``sanitize`` maps the names. A row exists only for a real
exception: tensor renames mlx-lm does not do (regexes applied in order before ``sanitize``; a
None target drops the tensor), config keys it reads under an older name, a nested text config,
or an encoder (lacy-mlx's BERT, which mlx-lm does not have).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .errors import UnknownArchitectureError

# Buffers that older checkpoints carry and no MLX model has a place for.
_ROTARY = (r"\.rotary_emb\.inv_freq$", None)


@dataclass(frozen=True)
class Family:
    """How to convert one ``model_type``; the default row (only the rotary-buffer drop) fits most decoders."""

    model_type: str
    kind: str = "decoder"  # "decoder" (an mlx-lm model) or "encoder" (lacy_mlx.encoder BERT)
    renames: tuple[tuple[str, str | None], ...] = (_ROTARY,)
    text_config: str | None = None  # nested config holding the language model's settings
    aliases: tuple[tuple[str, str], ...] = ()  # (key mlx-lm reads, key to copy it from when absent)
    why: str = ""  # what mlx-lm does not do here, for readers of the table
    example: str = ""  # a public checkpoint the row is for

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
    (r"^model\.language_model\.", "language_model.model."),
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
        Family("gemma3", renames=_GEMMA3_MM, text_config="text_config",
               why="transformers >= 4.52 nests the text tower under model.language_model; "
                   "mlx-lm's sanitize expects language_model.model", example="google/gemma-3-4b-pt"),
        Family("gpt2", renames=((r"^transformer\.", ""), (r"\.attn\.masked_bias$", None), _ROTARY),
               aliases=(("n_ctx", "n_positions"),),
               why="save_pretrained prefixes transformer.; mlx-lm reads n_ctx, "
                   "which transformers 5 no longer writes", example="openai-community/gpt2"),
        Family("gpt_neox", aliases=(("rotary_emb_base", "rope_theta"), ("rotary_pct", "partial_rotary_factor")),
               why="mlx-lm reads the pre-transformers-5 rope keys", example="EleutherAI/pythia-160m"),
        Family("qwen3_moe", aliases=(("num_experts", "num_local_experts"),),
               why="transformers 5 writes num_local_experts; mlx-lm reads num_experts",
               example="Qwen/Qwen3-30B-A3B"),
        Family("bert", kind="encoder", renames=_BERT, why="an encoder; mlx-lm has no BERT",
               example="sentence-transformers/all-MiniLM-L6-v2"),
    )
}


def family_for(config: dict[str, Any], config_path: str) -> Family:
    """The exception row for a parsed config.json, or the plain decoder row.

    Whether mlx-lm can build the decoder is decided later, by ``decoder.build_model``; a config
    without a ``model_type`` string fails here with UnknownArchitectureError naming the file.
    """
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise UnknownArchitectureError(
            f"{config_path}: has no model_type, so the architecture is unknown; use the config.json "
            "saved with the checkpoint (it names model_type, e.g. \"llama\")"
        )
    return FAMILIES.get(model_type) or Family(model_type)


def encoders() -> tuple[str, ...]:
    """The encoder model types lacy-mlx converts itself, for messages."""
    return tuple(sorted(t for t, f in FAMILIES.items() if f.kind == "encoder"))
