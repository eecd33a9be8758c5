"""Pickled state dicts saved from a transformers-5 model in memory, put back into the Hub layout.

``torch.save(model.state_dict())`` under transformers 5 writes the in-memory names, which for
some architectures differ from the files on the Hub that mlx-lm's ``sanitize`` reads: MoE experts
fused into one tensor per layer, heads renamed (GPT-NeoX's ``embed_out``). ``save_pretrained``
undoes this with transformers' ``revert_weight_conversion``; so does this module, on a meta-device
copy of the model (no memory), and only when every name is an in-memory name of that model.
Conversion asks for this only when a pickle's names do not fit the mlx-lm model, since importing
transformers costs seconds.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any


def to_hub_layout(state: dict[str, Any], config_dir: Path) -> dict[str, Any]:
    """``state`` in the Hub layout when it is a transformers-5 in-memory state dict, else unchanged.

    Without transformers >= 5, or for a model type it does not know, ``state`` is returned unchanged.
    """
    try:
        from transformers.core_model_loading import revert_weight_conversion
    except ImportError:  # no transformers, or transformers 4, whose in-memory names are the Hub's
        return state
    config = config_dir / "config.json"
    model = _meta_model(str(config_dir), config.stat().st_mtime_ns if config.is_file() else 0)
    if model is None or not set(state) <= set(model.state_dict()):  # Hub names, or not this model's
        return state
    try:
        return revert_weight_conversion(model, dict(state))  # a no-op for models with no conversions
    except Exception:  # left as it is; the shape check then names what does not fit
        return state


@lru_cache(maxsize=2)  # once per conversion, not once per shard
def _meta_model(config_dir: str, mtime_ns: int) -> Any:
    import torch
    import transformers

    try:
        config = transformers.AutoConfig.from_pretrained(config_dir)
        with torch.device("meta"):
            return transformers.AutoModelForCausalLM.from_config(config)
    except Exception:  # unknown to this transformers, or not a causal LM: nothing to revert
        return None

