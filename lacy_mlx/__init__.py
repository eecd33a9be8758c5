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
    "chunk_text": "lacy_mlx.chunker",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'lacy_mlx' has no attribute {name!r}")
    return getattr(import_module(module), name)


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_EXPORTS))
