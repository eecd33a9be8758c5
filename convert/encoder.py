"""BERT-family encoders: Hugging Face BertModel names with "bert." stripped and the pooler dropped.

The target is lacy_mlx.encoder's ``BertModel``, whose parameter names mirror Hugging Face's, so
conversion is the family's rename table plus a shape check against that model.
"""
from __future__ import annotations

from typing import Any

import mlx.nn as nn

from lacy_mlx.errors import InputError

from .errors import MissingConfigError


def build_encoder(config: dict[str, Any], config_path: str) -> nn.Module:
    """The MLX BERT encoder described by ``config`` (parameters lazy until loaded)."""
    from lacy_mlx.encoder.bert import BertArgs, BertModel

    try:
        return BertModel(BertArgs.from_config(config))
    except (InputError, TypeError) as exc:
        raise MissingConfigError(f"{config_path}: cannot build the MLX BERT encoder from it ({exc})") from exc
