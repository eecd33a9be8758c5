"""The trained module: an mlx-lm language model plus (optionally) the query tower, as one tree."""
from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
from mlx_lm.models import llama

from lacy_mlx.query_tower import QueryTower
from lacy_mlx.runtime.hidden import output_head
from lacy_mlx.train.config import TrainConfig


def llama_args(cfg: TrainConfig, vocab_size: int) -> llama.ModelArgs:
    """A small llama-style architecture (tied embeddings) from the config."""
    return llama.ModelArgs(
        model_type="llama", hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers,
        intermediate_size=cfg.intermediate_size, num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads, rms_norm_eps=1e-5, vocab_size=vocab_size,
        max_position_embeddings=4 * cfg.seq_len, rope_theta=10000.0, tie_word_embeddings=True,
    )


class TrainModel(nn.Module):
    """``lm`` (an mlx-lm ``Model``) and, when the tower is on, ``tower`` (a :class:`QueryTower`)."""

    def __init__(self, lm: nn.Module, tower: QueryTower | None = None) -> None:
        super().__init__()
        self.lm = lm
        if tower is not None:
            self.tower = tower

    @property
    def has_tower(self) -> bool:
        return "tower" in self

    def __call__(self, x: mx.array) -> tuple[mx.array, mx.array]:
        h = self.lm.model(x)  # (B, T, H), after the final norm
        return h, output_head(self.lm)(h)
