"""Embedders: one primitive, ``embed_batch(texts) -> float32 (n, d)`` with unit-norm rows."""
from lacy_mlx.embed.base import Embedder, check_embeddings
from lacy_mlx.embed.hashed import HashedEmbedder
from lacy_mlx.embed.registry import default_embedder, register_embedder, resolve_embedder

__all__ = [
    "Embedder",
    "HashedEmbedder",
    "check_embeddings",
    "default_embedder",
    "register_embedder",
    "resolve_embedder",
]
