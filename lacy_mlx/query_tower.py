"""The query tower: maps an SLM hidden state at a <CALL> position into the document encoder's space.

Trained with the latent-consistency (InfoNCE) objective so retrieval needs no encoder pass over
the text. Stored beside a model as ``query_tower.safetensors`` plus a ``query_tower`` entry in the
config.json ``lacy`` section: ``{"hidden_size": H, "embed_dim": D, "inner": I, "embedder": NAME}``.
"""
from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn

WEIGHTS_FILE = "query_tower.safetensors"


class QueryTower(nn.Module):
    """Two-layer MLP with a residual-free GELU and an L2-normalised output: ``(B, H) -> (B, D)``."""

    def __init__(self, hidden_size: int, embed_dim: int, inner: int | None = None) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.embed_dim = embed_dim
        self.inner = inner or 2 * max(hidden_size, embed_dim)
        self.norm = nn.LayerNorm(hidden_size)
        self.fc1 = nn.Linear(hidden_size, self.inner)
        self.fc2 = nn.Linear(self.inner, embed_dim)

    def __call__(self, h: mx.array) -> mx.array:
        q = self.fc2(nn.gelu(self.fc1(self.norm(h))))  # (B, D)
        return q / mx.maximum(mx.linalg.norm(q, axis=-1, keepdims=True), 1e-12)

    def config(self, embedder: str | None = None) -> dict:
        """The entry this tower writes into config.json's ``lacy.query_tower``."""
        cfg = {"hidden_size": self.hidden_size, "embed_dim": self.embed_dim, "inner": self.inner}
        if embedder:
            cfg["embedder"] = embedder
        return cfg

    def save(self, model_dir: str | Path, embedder: str | None = None) -> None:
        """Write the weights and merge this tower's entry into ``model_dir/config.json``."""
        model_dir = Path(model_dir)
        self.save_weights(str(model_dir / WEIGHTS_FILE))
        cfg_path = model_dir / "config.json"
        cfg = json.loads(cfg_path.read_text(encoding="utf-8")) if cfg_path.is_file() else {}
        cfg.setdefault("lacy", {})["query_tower"] = self.config(embedder)
        cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, model_dir: str | Path) -> "QueryTower | None":
        """The tower saved in ``model_dir``, or None when the folder has none."""
        model_dir = Path(model_dir)
        cfg_path = model_dir / "config.json"
        if not (model_dir / WEIGHTS_FILE).is_file() or not cfg_path.is_file():
            return None
        entry = json.loads(cfg_path.read_text(encoding="utf-8")).get("lacy", {}).get("query_tower")
        if not entry:
            return None
        tower = cls(entry["hidden_size"], entry["embed_dim"], entry.get("inner"))
        tower.load_weights(str(model_dir / WEIGHTS_FILE))
        return tower
