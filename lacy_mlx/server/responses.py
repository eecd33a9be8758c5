"""OpenAI response and chunk shapes, built from the runtime's events.

What clients read is exactly OpenAI's: ``chat.completion`` / ``chat.completion.chunk`` /
``text_completion``, ``finish_reason`` ``stop`` or ``length``, ``usage`` with
``prompt_tokens_details.cached_tokens``. What lacy adds rides in fields clients ignore:
``message.annotations`` (``url_citation`` entries pointing at store chunks) and a namespaced
``lacy`` object (each call with its reason, scores, query, hits and time; the gate's stats).
"""
from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass, field
from typing import Literal

from lacy_mlx.runtime.events import Call, DelegateError, Done, Evidence
from lacy_mlx.sentences import sentence_end
from lacy_mlx.store.records import SearchHit

JSON = dict[str, object]


def _num(x: float | None) -> float | None:
    """JSON has no NaN/inf: they become null."""
    return None if x is None or not math.isfinite(x) else round(float(x), 6)


def hit_url(hit: SearchHit) -> str:
    """Where a citation points: the document's external id when it is a URI, else the chunk."""
    if hit.external_id and "://" in hit.external_id:
        return hit.external_id
    return f"lacy://chunk/{hit.chunk_id}"


@dataclass
class CallRecord:
    """One call and what came of it, with the output offset where it happened."""

    call: Call
    offset: int
    evidence: Evidence | None = None
    error: DelegateError | None = None

    def to_json(self) -> JSON:
        c = self.call
        return {
            "step": c.step, "reason": c.reason, "entropy": _num(c.entropy), "p_call": _num(c.p_call),
            "threshold": {"entropy": _num(c.threshold[0]), "p_call": _num(c.threshold[1])},
            "delegate": c.delegate, "query": c.query, "ms": _num(c.ms),
            "hits": [{"chunk_id": h.chunk_id, "document_id": h.document_id, "external_id": h.external_id,
                      "title": h.title, "ordinal": h.ordinal, "score": _num(h.score), "url": hit_url(h)}
                     for h in c.hits],
            "evidence": None if self.evidence is None else {
                "kind": self.evidence.kind, "injection": self.evidence.injection,
                "sources": list(self.evidence.sources), "tokens": self.evidence.tokens},
            "error": None if self.error is None else {"reason": self.error.reason, "code": self.error.error},
        }


@dataclass
class Transcript:
    """What a response is built from: the output text (after stop sequences) and the calls."""

    text: str = ""
    calls: list[CallRecord] = field(default_factory=list)
    done: Done | None = None
    finish: Literal["stop", "length"] = "length"
    logprobs: list[JSON] | None = None  # a list when the request asked for them

    def annotations(self) -> list[JSON]:
        """``url_citation`` per hit of each call whose evidence was used: from the call's output
        offset to the end of that sentence (or of the text)."""
        out: list[JSON] = []
        for rec in self.calls:
            if rec.evidence is None or rec.evidence.kind != "evidence":
                continue
            start = min(rec.offset, len(self.text))
            end = sentence_end(self.text, start)
            for h in rec.call.hits:
                out.append({"type": "url_citation", "url_citation": {
                    "url": hit_url(h), "title": h.title or h.external_id or f"chunk {h.chunk_id}",
                    "start_index": start, "end_index": end}})
        return out

    def lacy(self, gate: JSON) -> JSON:
        d = self.done
        stats = None if d is None else {
            "steps": d.steps, "calls": d.calls, "call_rate": _num(d.call_rate), "tokens_per_s": _num(d.tokens_per_s),
            "seconds": _num(d.seconds), "prompt_s": _num(d.prompt_s), "gate_s": _num(d.gate_s),
            "retrieval_s": _num(d.retrieval_s), "delegate_s": _num(d.delegate_s), "inject_s": _num(d.inject_s),
            "delegate_errors": d.delegate_errors}
        return {"calls": [c.to_json() for c in self.calls], "stats": stats, "gate": gate}

    def usage(self) -> JSON:
        d = self.done
        prompt = d.prompt_tokens if d else 0
        completion = d.tokens if d else 0
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
                "prompt_tokens_details": {"cached_tokens": d.cached_tokens if d else 0}}


class Ids:
    """One ``id`` and ``created`` per response (every chunk of a stream shares them)."""

    def __init__(self, kind: Literal["chat", "completion"], model: str) -> None:
        self.kind = kind
        self.model = model
        self.id = ("chatcmpl-" if kind == "chat" else "cmpl-") + uuid.uuid4().hex
        self.created = int(time.time())

    def head(self, chunk: bool) -> JSON:
        if self.kind == "chat":
            obj = "chat.completion.chunk" if chunk else "chat.completion"
        else:
            obj = "text_completion"
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model,
                "system_fingerprint": "lacy-mlx"}


def logprobs_json(kind: str, entries: list[JSON] | None) -> JSON | None:
    """OpenAI's ``logprobs`` of a choice: chat ``{content: [...]}``, completions the four lists."""
    if entries is None:
        return None
    if kind == "chat":
        return {"content": [{k: v for k, v in e.items() if k != "text_offset"} for e in entries], "refusal": None}
    return {"tokens": [e["token"] for e in entries], "token_logprobs": [e["logprob"] for e in entries],
            "top_logprobs": [{x["token"]: x["logprob"] for x in e["top_logprobs"]} for e in entries],  # type: ignore[attr-defined]
            "text_offset": [e["text_offset"] for e in entries]}


def completion(ids: Ids, t: Transcript, gate: JSON) -> JSON:
    """The non-streaming response body."""
    if ids.kind == "chat":
        choice: JSON = {"index": 0, "message": {"role": "assistant", "content": t.text, "refusal": None,
                                                "annotations": t.annotations()},
                        "logprobs": logprobs_json("chat", t.logprobs), "finish_reason": t.finish}
    else:
        choice = {"index": 0, "text": t.text, "logprobs": logprobs_json("completion", t.logprobs),
                  "finish_reason": t.finish}
    return {**ids.head(False), "choices": [choice], "usage": t.usage(), "lacy": t.lacy(gate)}


def chunk(ids: Ids, text: str | None = None, *, role: bool = False, finish: str | None = None,
          include_usage: bool = False, extra: JSON | None = None, logprobs: list[JSON] | None = None) -> JSON:
    """One streaming chunk: the role delta, a text delta, or the final one with ``finish``."""
    if ids.kind == "chat":
        delta: JSON = {}
        if role:
            delta = {"role": "assistant", "content": "", "refusal": None}
        elif text is not None:
            delta = {"content": text}
        if extra and "annotations" in extra:
            delta["annotations"] = extra["annotations"]
        choice: JSON = {"index": 0, "delta": delta, "logprobs": logprobs_json("chat", logprobs),
                        "finish_reason": finish}
    else:
        choice = {"index": 0, "text": text or "", "logprobs": logprobs_json("completion", logprobs),
                  "finish_reason": finish}
    body: JSON = {**ids.head(True), "choices": [choice]}
    if include_usage:
        body["usage"] = None  # OpenAI: null on every chunk but the last when usage is asked for
    if extra and "lacy" in extra:
        body["lacy"] = extra["lacy"]
    return body


def usage_chunk(ids: Ids, t: Transcript) -> JSON:
    """The last chunk when ``stream_options.include_usage``: no choices, the usage."""
    return {**ids.head(True), "choices": [], "usage": t.usage()}


def models(model_ids: list[str], created: int) -> JSON:
    return {"object": "list", "data": [model_card(m, created) for m in model_ids]}


def model_card(model_id: str, created: int) -> JSON:
    return {"id": model_id, "object": "model", "created": created, "owned_by": "lacy-mlx"}
