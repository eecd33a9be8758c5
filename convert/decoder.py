"""Decoder conversion through mlx-lm's own model classes, so ``mlx_lm.load`` reads the result."""
from __future__ import annotations

import importlib
from typing import Any

import mlx.core as mx
import mlx.nn as nn

from .errors import MissingConfigError
from .families import Family


def build_model(config: dict[str, Any], family: Family, config_path: str) -> nn.Module:
    """Instantiate the mlx-lm Model for ``config`` (parameters stay lazy until loaded)."""
    arch = importlib.import_module(f"mlx_lm.models.{family.mlx_module}")
    try:
        return arch.Model(arch.ModelArgs.from_dict(config))
    except (TypeError, KeyError, ValueError) as exc:
        raise MissingConfigError(
            f"{config_path}: cannot build the mlx-lm {family.mlx_module} model from it ({exc}); "
            "the config lacks or mis-states a required field"
        ) from exc


def mlx_names(model: nn.Module, family: Family, weights: dict[str, mx.array]) -> dict[str, mx.array]:
    """Source tensor names -> the model's parameter names (rename table, then mlx-lm's sanitize)."""
    weights = family.rename(weights)
    return model.sanitize(weights) if hasattr(model, "sanitize") else weights
