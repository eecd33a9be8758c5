"""Make a transformers-5 config.json readable by mlx-lm's ModelArgs without losing settings.

transformers >= 5 nests ``rope_theta`` (and the scaling) under ``rope_parameters``, per layer type
for Gemma 3; most mlx-lm ModelArgs only read the flat keys and would silently fall back to their
defaults (a wrong rope base gives a model that loads but is wrong). The flat keys are added next
to the nested ones; nothing is removed.
"""
from __future__ import annotations

import copy
from typing import Any

from .families import Family


def normalise_config(config: dict[str, Any], family: Family) -> dict[str, Any]:
    """A copy of ``config`` with flat rope keys, the family's aliases and the window period filled in."""
    config = copy.deepcopy(config)
    _fix(config)
    for key, source in family.aliases:  # after _fix: some sources are the lifted rope keys
        if key not in config and source in config:
            config[key] = config[source]
    if family.text_config and isinstance(config.get(family.text_config), dict):
        text = config[family.text_config]
        _fix(text)
        if "vocab_size" not in config and "vocab_size" in text:
            config["vocab_size"] = text["vocab_size"]  # mlx-lm's gemma3 reads it at the top
    return config


def _fix(cfg: dict[str, Any]) -> None:
    rope = cfg.get("rope_parameters")
    if isinstance(rope, dict):
        if "full_attention" in rope or "sliding_attention" in rope:
            _lift(cfg, rope.get("full_attention") or {})
            local = (rope.get("sliding_attention") or {}).get("rope_theta")
            if local is not None:
                cfg.setdefault("rope_local_base_freq", local)
        else:
            _lift(cfg, rope)
    if "sliding_window_pattern" not in cfg:  # gemma3, cohere2: mlx-lm reads the period
        pattern = _window_pattern(cfg)
        if pattern:
            cfg["sliding_window_pattern"] = pattern


def _lift(cfg: dict[str, Any], rope: dict[str, Any]) -> None:
    if "rope_theta" in rope:
        cfg.setdefault("rope_theta", rope["rope_theta"])
    if "partial_rotary_factor" in rope:
        cfg.setdefault("partial_rotary_factor", rope["partial_rotary_factor"])
    kind = rope.get("rope_type", rope.get("type"))
    if kind not in (None, "default") and not cfg.get("rope_scaling"):
        scaling = {k: v for k, v in rope.items() if k not in ("rope_theta", "partial_rotary_factor")}
        scaling.setdefault("type", kind)  # older mlx-lm readers look for "type"
        scaling.setdefault("rope_type", kind)
        cfg["rope_scaling"] = scaling


def _window_pattern(cfg: dict[str, Any]) -> int | None:
    """The every-Nth-layer-is-global period (Gemma 3, Cohere 2), from layer_types or the private key."""
    types = cfg.get("layer_types")
    if isinstance(types, list) and "full_attention" in types:
        period = types.index("full_attention") + 1
        expected = ["full_attention" if (i + 1) % period == 0 else "sliding_attention" for i in range(len(types))]
        if types == expected:
            return period
    private = cfg.get("_sliding_window_pattern")
    return int(private) if isinstance(private, int) else None
