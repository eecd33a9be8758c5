"""The cascade runtime: an mlx-lm model, the gate, delegates and streaming generation.

Layout: ``policy`` (gate settings, call budget), ``decoder`` (KV cache and lazy gated steps),
``hidden`` (hidden states without a second pass), ``delegates/`` (retrieval, model, callback),
``inject`` (inline / prefix injection, prompt encoding), ``output`` (detokenised output and
sentences), ``prompt_cache`` (a KV cache reused across calls), ``cascade`` (the decode loop),
``events`` (what it yields), ``stream`` (the stoppable ``Stream``), ``kinds`` (the ``Literal``
types), ``lacy`` (``Lacy``), ``loading`` (``load``). The special tokens and the evidence format
it shares with training are :mod:`lacy_mlx.tokens`; the sentence rule, :mod:`lacy_mlx.sentences`.
"""
from lacy_mlx.runtime.delegates import (
    CallbackDelegate,
    CallContext,
    Delegate,
    Help,
    LatentQuery,
    ModelDelegate,
    RetrievalDelegate,
    TextQuery,
)
from lacy_mlx.runtime.events import (
    Call,
    DelegateError,
    Done,
    Event,
    Evidence,
    GenerationResult,
    Token,
    call_rate,
    output_text,
)
from lacy_mlx.runtime.lacy import Lacy, Sampling
from lacy_mlx.runtime.loading import load
from lacy_mlx.runtime.policy import CallBudget, GateConfig
from lacy_mlx.runtime.stream import Stream

__all__ = [
    "Call",
    "CallBudget",
    "CallContext",
    "CallbackDelegate",
    "Delegate",
    "DelegateError",
    "Done",
    "Event",
    "Evidence",
    "GateConfig",
    "GenerationResult",
    "Help",
    "Lacy",
    "LatentQuery",
    "ModelDelegate",
    "RetrievalDelegate",
    "Sampling",
    "Stream",
    "TextQuery",
    "Token",
    "call_rate",
    "load",
    "output_text",
]
