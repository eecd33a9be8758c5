"""Pickled state dicts saved from a transformers-5 model in memory, put back into the Hub layout.

``torch.save(model.state_dict())`` under transformers 5 writes the in-memory names, which for
some architectures differ from the files on the Hub that mlx-lm's ``sanitize`` reads: MoE experts
fused into one tensor per layer, heads renamed (GPT-NeoX's ``embed_out``). ``save_pretrained``
undoes this with transformers' ``revert_weight_conversion``; so does this module, on a meta-device
copy of the model (no memory), and only when every name is an in-memory name of that model.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any


def to_hub_layout(state: dict[str, Any], config_dir: Path) -> dict[str, Any]:
    """``state`` in the Hub layout when it is a transformers-5 in-memory state dict, else unchanged.

    Needs transformers (absent: unchanged); a model type transformers does not know is unchanged.
    """
    model = _meta_model(config_dir)
    if model is None:
        return state
    from transformers.core_model_loading import revert_weight_conversion

    if not set(state) <= set(model.state_dict()):  # already Hub names (or not this model's)
        return state
    return revert_weight_conversion(model, dict(state))  # a no-op for models with no conversions


def _meta_model(config_dir: Path) -> Any:
    try:
        import torch
        import transformers
    except ImportError:
        return None
    try:
        config = transformers.AutoConfig.from_pretrained(str(config_dir))
        with torch.device("meta"):
            return transformers.AutoModelForCausalLM.from_config(config)
    except Exception:  # unknown to this transformers, or not a causal LM: nothing to revert
        return None

