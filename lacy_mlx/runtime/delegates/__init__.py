"""Delegates: what answers a call. Retrieval (store + query builder), a bigger model, a callback."""
from lacy_mlx.runtime.delegates.base import (
    CallContext,
    Delegate,
    DelegateTimeout,
    Help,
    Outcome,
    call_with_timeout,
    run_delegate,
)
from lacy_mlx.runtime.delegates.callback import CallbackDelegate
from lacy_mlx.runtime.delegates.model import ModelDelegate
from lacy_mlx.runtime.delegates.retrieval import LatentQuery, RetrievalDelegate, TextQuery

__all__ = [
    "CallContext",
    "CallbackDelegate",
    "Delegate",
    "DelegateTimeout",
    "Help",
    "LatentQuery",
    "ModelDelegate",
    "Outcome",
    "RetrievalDelegate",
    "TextQuery",
    "call_with_timeout",
    "run_delegate",
]
