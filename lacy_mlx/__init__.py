"""lacy-mlx: small language models on MLX that know when to ask for help.

Public entry points are imported lazily so that ``import lacy_mlx`` stays cheap (the store and
the CLI must not pay for loading MLX models).
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

# name -> module that defines it; resolved on first attribute access.
_EXPORTS = {
    "Store": "lacy_mlx.store",
    "SearchHit": "lacy_mlx.store",
    "StoreError": "lacy_mlx.errors",
    "LacyError": "lacy_mlx.errors",
    "Embedder": "lacy_mlx.embed",
    "HashedEmbedder": "lacy_mlx.embed",
    "MLXEncoder": "lacy_mlx.encoder",
    "chunk_text": "lacy_mlx.chunker",
    # the cascade runtime
    "load": "lacy_mlx.runtime",
    "Lacy": "lacy_mlx.runtime",
    "GateConfig": "lacy_mlx.runtime",
    "Sampling": "lacy_mlx.runtime",
    "Token": "lacy_mlx.runtime",
    "Call": "lacy_mlx.runtime",
    "Evidence": "lacy_mlx.runtime",
    "DelegateError": "lacy_mlx.runtime",
    "Done": "lacy_mlx.runtime",
    "GenerationResult": "lacy_mlx.runtime",
    "Stream": "lacy_mlx.runtime",
    "Delegate": "lacy_mlx.runtime",
    "CallContext": "lacy_mlx.runtime",
    "Help": "lacy_mlx.runtime",
    "RetrievalDelegate": "lacy_mlx.runtime",
    "ModelDelegate": "lacy_mlx.runtime",
    "CallbackDelegate": "lacy_mlx.runtime",
    # the OpenAI-compatible server
    "LacyServer": "lacy_mlx.server",
    "ServerConfig": "lacy_mlx.server",
    # conversion (the function itself is lacy_mlx.convert.convert: the name is the subpackage's)
    "ConvertResult": "lacy_mlx.convert",
    "ConvertError": "lacy_mlx.convert",
    # training (the functions are lacy_mlx.train.train / finetune / evaluate)
    "TrainConfig": "lacy_mlx.train",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'lacy_mlx' has no attribute {name!r}")
    return getattr(import_module(module), name)


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_EXPORTS))
