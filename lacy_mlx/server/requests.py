"""OpenAI request bodies -> checked, typed requests; everything else is a 400 that says why.

Parameters that would change the output and are not implemented (``n`` > 1, ``tools``,
``response_format`` other than text, penalties, ``logit_bias``, ``echo``, ...) are
rejected, never ignored. Parameters that change nothing (``user``, ``metadata``, ``store``, ...)
are accepted. Unknown keys are rejected too: a typo must not pass silently. lacy-specific
options ride in one namespaced field, ``"lacy": {...}`` (``extra_body`` in the openai client).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from lacy_mlx.gate import MODES
from lacy_mlx.runtime.lacy import Sampling

JSON = dict[str, object]

# Accepted and without effect on the output.
_HARMLESS = frozenset({"model", "user", "metadata", "store", "service_tier", "parallel_tool_calls", "stream_options"})
_CHAT_KEYS = frozenset({
    "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "stop", "seed", "stream",
    "n", "logprobs", "top_logprobs", "response_format", "tools", "tool_choice", "functions", "function_call",
    "logit_bias", "presence_penalty", "frequency_penalty", "lacy",
}) | _HARMLESS
_COMPLETION_KEYS = frozenset({
    "prompt", "max_tokens", "temperature", "top_p", "stop", "seed", "stream", "n", "logprobs", "echo",
    "suffix", "best_of", "logit_bias", "presence_penalty", "frequency_penalty", "lacy",
}) | _HARMLESS
_LACY_KEYS = {
    "gate": str, "call_threshold": float, "entropy_threshold": float, "budget": float, "min_gap": int,
    "max_calls": int, "per_sentence": int, "retrieval": bool, "k": int,
}
_ROLES = frozenset({"system", "developer", "user", "assistant"})


class ApiError(Exception):
    """An error answered as ``{"error": {"message", "type", "param", "code"}}`` with ``status``."""

    TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
             404: "not_found_error", 405: "invalid_request_error", 411: "invalid_request_error",
             413: "invalid_request_error", 429: "rate_limit_error", 500: "server_error", 503: "server_error"}

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code

    def body(self) -> JSON:
        return {"error": {"message": self.message, "type": self.TYPES.get(self.status, "server_error"),
                          "param": self.param, "code": self.code}}


@dataclass(frozen=True)
class LacyOptions:
    """The request's ``lacy`` field: gate changes for this request and retrieval on/off, ``k``."""

    gate_changes: dict[str, str | float | int] = field(default_factory=dict)
    retrieval: bool = True
    k: int | None = None


@dataclass(frozen=True)
class GenerationRequest:
    """A checked ``/v1/chat/completions`` (``kind="chat"``) or ``/v1/completions`` request."""

    kind: Literal["chat", "completion"]
    prompt: str | list[dict[str, str]]
    max_tokens: int
    sampling: Sampling
    stop: tuple[str, ...] = ()
    stream: bool = False
    include_usage: bool = False
    lacy: LacyOptions = field(default_factory=LacyOptions)
    logprobs: int | None = None  # None: off; k: each token's log-probability and the top k


@dataclass(frozen=True)
class EmbeddingRequest:
    """A checked ``/v1/embeddings`` request."""

    texts: tuple[str, ...]
    encoding: Literal["float", "base64"] = "float"


def parse_generation(body: JSON, kind: Literal["chat", "completion"], *, default_max_tokens: int,
                     max_tokens_cap: int) -> GenerationRequest:
    """Check ``body`` (the parsed JSON object) and build the request; raises :class:`ApiError` (400)."""
    _no_unknown(body, _CHAT_KEYS if kind == "chat" else _COMPLETION_KEYS)
    _reject_unsupported(body, kind)
    prompt: str | list[dict[str, str]] = _messages(body) if kind == "chat" else _prompt(body)
    max_tokens = _max_tokens(body, default_max_tokens, max_tokens_cap)
    stream = _typed(body, "stream", bool, False)
    options = body.get("stream_options")
    if options is not None and not stream:
        raise ApiError(400, "stream_options is only allowed with stream: true", param="stream_options")
    include_usage = False
    if options is not None:
        if not isinstance(options, dict):
            raise ApiError(400, "stream_options must be an object", param="stream_options")
        include_usage = _typed(options, "include_usage", bool, False, prefix="stream_options.")
    return GenerationRequest(kind, prompt, max_tokens, _sampling(body), _stops(body), stream, include_usage,
                             _lacy_options(body), _logprobs(body, kind))


def parse_embeddings(body: JSON) -> EmbeddingRequest:
    """Check an embeddings body: ``input`` (a string or a list of strings), ``encoding_format``."""
    _no_unknown(body, frozenset({"model", "input", "encoding_format", "dimensions", "user"}))
    if body.get("dimensions") is not None:
        raise ApiError(400, "dimensions is not supported: the store's encoder has a fixed size", param="dimensions")
    data = body.get("input")
    texts = [data] if isinstance(data, str) else data
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t for t in texts):
        raise ApiError(400, "input must be a non-empty string or a list of non-empty strings "
                       "(token arrays are not supported)", param="input")
    encoding = body.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        raise ApiError(400, "encoding_format must be 'float' or 'base64'", param="encoding_format")
    return EmbeddingRequest(tuple(texts), encoding)  # type: ignore[arg-type]


def model_name(body: JSON) -> str:
    """The request's ``model`` (required, a string)."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "model is required: GET /v1/models lists the one this server runs", param="model")
    return model


# ---- pieces ---------------------------------------------------------------------------------

def _no_unknown(body: JSON, known: frozenset[str]) -> None:
    unknown = sorted(set(body) - known)
    if unknown:
        raise ApiError(400, f"unknown parameter {unknown[0]!r}: this server does not support it", param=unknown[0])


def _unsupported(param: str, why: str) -> ApiError:
    return ApiError(400, f"{param} is not supported by this server: {why}", param=param, code="unsupported_parameter")


def _reject_unsupported(body: JSON, kind: str) -> None:
    n = body.get("n", 1)
    if n is not None and n != 1:
        raise _unsupported("n", "one choice per request (n = 1)")
    for key in ("tools", "functions", "logit_bias"):
        if body.get(key):
            raise _unsupported(key, "the model has no tool calling or logit bias here")
    for key in ("tool_choice", "function_call"):
        if body.get(key) not in (None, "none", "auto"):
            raise _unsupported(key, "the model has no tool calling here")
    fmt = body.get("response_format")
    if fmt is not None and fmt != {"type": "text"}:
        raise _unsupported("response_format", "only plain text output ({'type': 'text'})")
    for key in ("presence_penalty", "frequency_penalty"):
        if body.get(key) not in (None, 0, 0.0):
            raise _unsupported(key, "leave it at 0")
    if kind == "completion":
        if body.get("echo"):
            raise _unsupported("echo", "the prompt is not echoed")
        if body.get("suffix"):
            raise _unsupported("suffix", "no insertion mode")
        if body.get("best_of") not in (None, 1):
            raise _unsupported("best_of", "one candidate per request")


def _messages(body: JSON) -> list[dict[str, str]]:
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise ApiError(400, "messages must be a non-empty list of {role, content} objects", param="messages")
    out = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or m.get("role") not in _ROLES:
            raise ApiError(400, f"messages[{i}] needs a role among {sorted(_ROLES)} (tool messages are not "
                           "supported)", param=f"messages[{i}].role")
        if m.get("tool_calls"):
            raise _unsupported(f"messages[{i}].tool_calls", "no tool calling")
        role = "system" if m["role"] == "developer" else str(m["role"])
        out.append({"role": role, "content": _content(m.get("content"), i)})
    return out


def _content(content: object, i: int) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: text only
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise ApiError(400, f"messages[{i}].content: only text parts are supported", param=f"messages[{i}].content")
            texts.append(part["text"])
        return "".join(texts)
    raise ApiError(400, f"messages[{i}].content must be a string or a list of text parts", param=f"messages[{i}].content")


def _prompt(body: JSON) -> str:
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str) or not prompt:
        raise ApiError(400, "prompt must be a non-empty string (one prompt per request; token arrays are not "
                       "supported)", param="prompt")
    return prompt


def _logprobs(body: JSON, kind: str) -> int | None:
    """Chat: ``logprobs`` (bool) and ``top_logprobs`` (0-20); completions: ``logprobs`` (0-5)."""
    value, top = body.get("logprobs"), body.get("top_logprobs")
    if kind == "completion":
        if value is None:
            return None
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 5:
            raise ApiError(400, "logprobs must be an integer in [0, 5] for completions", param="logprobs")
        return value
    if value is not None and not isinstance(value, bool):
        raise ApiError(400, "logprobs must be true or false", param="logprobs")
    if top is not None and (not isinstance(top, int) or isinstance(top, bool) or not 0 <= top <= 20):
        raise ApiError(400, "top_logprobs must be an integer in [0, 20]", param="top_logprobs")
    if top and not value:
        raise ApiError(400, "top_logprobs needs logprobs: true", param="top_logprobs")
    return (top or 0) if value else None


def _max_tokens(body: JSON, default: int, cap: int) -> int:
    value = body.get("max_completion_tokens", body.get("max_tokens"))
    param = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
    if value is None:
        return min(default, cap)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ApiError(400, f"{param} must be a positive integer", param=param)
    if value > cap:
        raise ApiError(400, f"{param} {value} is above this server's cap of {cap} (lacy-mlx serve --max-tokens-cap)",
                       param=param)
    return value


def _number(body: JSON, key: str, default: float, lo: float, hi: float) -> float:
    value = body.get(key)
    if value is None:
        return default
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not lo <= value <= hi:
        raise ApiError(400, f"{key} must be a number in [{lo:g}, {hi:g}]", param=key)
    return float(value)


def _sampling(body: JSON) -> Sampling:
    # Greedy unless asked: LaCy decodes greedily, and a local server should be reproducible.
    temp = _number(body, "temperature", 0.0, 0.0, 2.0)
    top_p = _number(body, "top_p", 1.0, 0.0, 1.0)
    seed = body.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise ApiError(400, "seed must be an integer", param="seed")
    # mlx-lm's sampler treats top_p 1.0 (or 0) as off.
    return Sampling(temp=temp, top_p=top_p if 0.0 < top_p < 1.0 else 0.0, seed=seed)


def _stops(body: JSON) -> tuple[str, ...]:
    stop = body.get("stop")
    if stop is None:
        return ()
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or len(stops) > 4 or not all(isinstance(s, str) and s for s in stops):
        raise ApiError(400, "stop must be a non-empty string or a list of up to 4 non-empty strings", param="stop")
    return tuple(stops)


def _typed(obj: JSON, key: str, kind: type, default: object, prefix: str = "") -> object:
    value = obj.get(key, default)
    if value is None:
        return default
    if not isinstance(value, kind):
        raise ApiError(400, f"{prefix}{key} must be a {kind.__name__}", param=prefix + key)
    return value


def _lacy_options(body: JSON) -> LacyOptions:
    opts = body.get("lacy")
    if opts is None:
        return LacyOptions()
    if not isinstance(opts, dict):
        raise ApiError(400, "lacy must be an object, e.g. {\"gate\": \"entropy\", \"k\": 3}", param="lacy")
    unknown = sorted(set(opts) - set(_LACY_KEYS))
    if unknown:
        raise ApiError(400, f"unknown lacy option {unknown[0]!r}; known: {sorted(_LACY_KEYS)}", param=f"lacy.{unknown[0]}")
    changes: dict[str, str | float | int] = {}
    for key, kind in _LACY_KEYS.items():
        value = opts.get(key)
        if value is None or key in ("retrieval", "k"):
            continue
        ok = isinstance(value, (int, float)) if kind is float else isinstance(value, kind)
        if not ok or (kind is not bool and isinstance(value, bool)):
            raise ApiError(400, f"lacy.{key} must be a {kind.__name__}", param=f"lacy.{key}")
        changes["mode" if key == "gate" else key] = value  # type: ignore[assignment]
    if "mode" in changes and changes["mode"] not in MODES:
        raise ApiError(400, f"lacy.gate must be one of {sorted(MODES)}", param="lacy.gate")
    retrieval = _typed(opts, "retrieval", bool, True, prefix="lacy.")
    k = opts.get("k")
    if k is not None and (not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= 64):
        raise ApiError(400, "lacy.k must be an integer in [1, 64]", param="lacy.k")
    return LacyOptions(changes, bool(retrieval), k)
