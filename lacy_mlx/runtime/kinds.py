"""The runtime's closed sets of names, as ``Literal`` types (for type checkers and docs)."""
from __future__ import annotations

from typing import Literal

GateMode = Literal["off", "call", "entropy", "either"]
"""``call``: p(<CALL>) passes its threshold; ``entropy``: next-token entropy does; ``either``; ``off``."""

Injection = Literal["auto", "inline", "prefix"]
"""How help enters the SLM's context (:mod:`lacy_mlx.runtime.inject`)."""

ResolvedInjection = Literal["inline", "prefix"]
""":data:`Injection` once ``auto`` is decided for a model (``Lacy.injection``)."""

InjectionUsed = Literal["inline", "prefix", "append"]
"""How one delegate answer entered (``Evidence.injection``): ``append`` for continuation text."""

DelegateKind = Literal["retrieval", "model", "callback"]
"""Which timer a delegate's time counts towards (``Done.retrieval_s`` is the retrieval kind's)."""

RetrievalMode = Literal["vector", "keyword", "hybrid"]
"""Which rankings a retrieval delegate's search uses (``Store.search(mode=...)``; the store's
``RETRIEVAL_MODES``)."""

QueryKind = Literal["text", "latent"]
"""What a retrieval delegate searches with: the masked current sentence, or the query tower's vector."""

HelpKind = Literal["evidence", "continuation"]
"""Passages the SLM reads, or text appended to the output."""

CallReason = Literal["call", "entropy", "call+entropy", "first"]
"""Which criterion fired the gate (``first``: retrieval before the answer, ``retrieve_first``)."""

TokenSource = Literal["model", "delegate"]
"""Who wrote a token: the SLM, or a model delegate's continuation."""

FinishReason = Literal["stop", "length", "cancelled"]
"""End-of-sequence token, ``max_tokens`` reached, or the host cancelled the stream."""
