"""lacy-mlx: small language models on MLX that know when to ask for help.

Public entry points are imported lazily so that ``import lacy_mlx`` stays cheap (the store and
the CLI must not pay for loading MLX models); type checkers see them through the imports below.
``lacy_mlx.convert`` is the conversion package and, called, its function
(``lacy_mlx.convert(src, out)`` is ``lacy_mlx.convert.convert(src, out)``).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from lacy_mlx.lazy import lazy_exports

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
    "TextQuery": "lacy_mlx.runtime",
    "ModelDelegate": "lacy_mlx.runtime",
    "CallbackDelegate": "lacy_mlx.runtime",
    "output_text": "lacy_mlx.runtime",
    # the OpenAI-compatible server
    "LacyServer": "lacy_mlx.server",
    "ServerConfig": "lacy_mlx.server",
    # conversion: the package, callable as its function
    "convert": "lacy_mlx.convert",
    "ConvertResult": "lacy_mlx.convert",
    "ConvertError": "lacy_mlx.convert",
    # training (the functions are lacy_mlx.train.train / finetune / evaluate)
    "TrainConfig": "lacy_mlx.train",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from lacy_mlx import convert
    from lacy_mlx.chunker import chunk_text
    from lacy_mlx.convert import ConvertError, ConvertResult
    from lacy_mlx.embed import Embedder, HashedEmbedder
    from lacy_mlx.encoder import MLXEncoder
    from lacy_mlx.errors import LacyError, StoreError
    from lacy_mlx.runtime import (
        Call,
        CallbackDelegate,
        CallContext,
        Delegate,
        DelegateError,
        Done,
        Evidence,
        GateConfig,
        GenerationResult,
        Help,
        Lacy,
        ModelDelegate,
        RetrievalDelegate,
        Sampling,
        Stream,
        TextQuery,
        Token,
        load,
        output_text,
    )
    from lacy_mlx.server import LacyServer, ServerConfig
    from lacy_mlx.store import SearchHit, Store
    from lacy_mlx.train import TrainConfig

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals(), modules=("convert",))
