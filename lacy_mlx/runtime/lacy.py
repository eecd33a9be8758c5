"""The public runtime object: a model that knows when to ask for help.

>>> import lacy_mlx
>>> lacy = lacy_mlx.load("path/to/mlx-model", db="kb.db")          # doctest: +SKIP
>>> for event in lacy.stream("Marie Curie was born in", max_tokens=32):  # doctest: +SKIP
...     print(event)
>>> result = lacy.generate([{"role": "user", "content": "Who was Ada Lovelace?"}])  # doctest: +SKIP
>>> result.text, result.stats.call_rate, result.sources              # doctest: +SKIP
"""
from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import mlx.core as mx
import mlx.nn as nn
from mlx_lm.sample_utils import make_sampler

from lacy_mlx.errors import InputError
from lacy_mlx.runtime.cascade import Cascade, RunSettings
from lacy_mlx.runtime.delegates import CallbackDelegate
from lacy_mlx.runtime.delegates.base import CallContext, Delegate
from lacy_mlx.runtime.events import (
    Call,
    DelegateError,
    Done,
    Evidence,
    GenerationResult,
    Token,
)
from lacy_mlx.runtime.inject import Messages, Placement, resolve_injection
from lacy_mlx.runtime.kinds import Injection
from lacy_mlx.runtime.policy import GateConfig
from lacy_mlx.runtime.prompt_cache import PromptCache
from lacy_mlx.runtime.stream import Stream
from lacy_mlx.tokens import SpecialIds

if TYPE_CHECKING:
    from mlx_lm.tokenizer_utils import TokenizerWrapper

Sampler = Callable[[mx.array], mx.array]
"""An mlx-lm sampler: log-probabilities ``(1, V)`` -> token ids ``(1,)``."""
GateChange = str | float | int | None
"""A value of a :class:`GateConfig` field passed to ``stream(..., **changes)``."""


@dataclass(frozen=True)
class Sampling:
    """Sampling settings, passed to mlx-lm's ``make_sampler``. ``temp=0`` is greedy decoding."""

    temp: float = 0.0
    top_p: float = 0.0
    top_k: int = 0
    min_p: float = 0.0
    seed: int | None = None

    def __post_init__(self) -> None:
        """Refuse settings mlx-lm would act on wrongly (a negative temperature flips the logits)."""
        _check_number("temp", self.temp, low=0.0, hint="0 is greedy decoding, 0.7 a common choice")
        _check_number("top_p", self.top_p, low=0.0, high=1.0, hint="0 or 1 turns it off")
        _check_number("min_p", self.min_p, low=0.0, high=1.0, hint="0 turns it off")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0:
            raise InputError(f"top_k must be a whole number >= 0 (0 turns it off), got {self.top_k!r}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0):
            raise InputError(f"seed must be a whole number >= 0 or None, got {self.seed!r}")

    def sampler(self) -> Callable:
        if self.seed is not None:
            import mlx.core as mx

            mx.random.seed(self.seed)
        return make_sampler(temp=self.temp, top_p=self.top_p, min_p=self.min_p, top_k=self.top_k)


def _check_number(name: str, value: object, *, low: float, high: float | None = None, hint: str) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < low or (high is not None and value > high):  # type: ignore[operator]
        bound = f"between {low:g} and {high:g}" if high is not None else f">= {low:g}"
        raise InputError(f"{name} must be a number {bound} ({hint}), got {value!r}")


def context_length(model: Any) -> int | None:
    """The most tokens ``model`` was built to attend over (its config's position limit), or None."""
    args = getattr(model, "args", None)
    for key in ("max_position_embeddings", "n_positions", "n_ctx"):
        value = getattr(args, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


class Lacy:
    """An mlx-lm model with the gate, a delegate and an injection mode.

    Build it with :func:`load`. ``gate``, ``injection`` and ``delegate`` are attributes: change
    them between generations (the chat CLI's slash commands do). A generation's ``Done.context``
    holds the token ids the SLM's KV cache ended with (prompt, output, calls, evidence).

    ``reuse_prompt_cache``: keep the SLM's KV cache after a generation and prefill only what the
    next prompt does not share with it (a conversation's turns; ``Done.cached_tokens``). Off by
    default: with it on, outputs can differ from a fresh prefill in the last bits of the logits.

    Thread-safety: one generation at a time per ``Lacy`` (the model, its cache and the delegate's
    state are shared). Starting a second stream while one is running raises
    :class:`~lacy_mlx.errors.LacyError`; :meth:`Stream.cancel` may be called from any thread.
    Serve many clients by queueing them onto one thread, as ``lacy-mlx serve`` does.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: TokenizerWrapper,
        *,
        specials: SpecialIds,
        delegate: Delegate | Callable[[CallContext], object] | None = None,
        gate: GateConfig,
        injection: Injection = "auto",
        max_evidence_tokens: int = 256,
        name: str = "model",
        retrieve_first: bool = False,
        placement: Placement = "system",
        reuse_prompt_cache: bool = False,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.specials = specials
        self.delegate: Delegate | None = _as_delegate(delegate)
        self.gate = gate
        self.injection = resolve_injection(injection, specials)
        self.max_evidence_tokens = max_evidence_tokens
        self.name = name
        self.retrieve_first = retrieve_first
        self.placement = placement
        self.max_context = context_length(model)  # None: the model states no limit
        self.reuse_prompt_cache = reuse_prompt_cache
        self._prompt_cache: PromptCache | None = None
        self._busy = threading.Lock()

    @property
    def has_call_token(self) -> bool:
        return self.specials.call is not None

    def stream(
        self,
        prompt: str | Messages,
        *,
        max_tokens: int = 256,
        sampling: Sampling | Sampler | None = None,
        gate: GateConfig | None = None,
        retrieve_first: bool | None = None,
        max_sentences: int | None = None,
        logprobs: int | None = None,
        probe: int = 0,
        **gate_changes: GateChange,
    ) -> Stream:
        """Generate from ``prompt`` (a string, or chat messages rendered by the tokenizer's chat
        template); returns a :class:`~lacy_mlx.runtime.stream.Stream` of events
        (:mod:`lacy_mlx.runtime.events`): ``Token``, ``Call``, ``Evidence``, ``DelegateError``,
        and a final ``Done``. The output text is the ``Token`` texts, then ``Done.trailing_text``
        (:func:`~lacy_mlx.runtime.events.output_text` of each event).

        Arguments are checked and the prompt encoded now (bad input raises
        :class:`~lacy_mlx.errors.InputError` here); decoding starts at the first ``next()``.
        Break out of the loop, ``close()`` or ``cancel()`` the stream to stop it early.
        ``sampling``: a :class:`Sampling`, an mlx-lm sampler (log-probabilities -> token), or
        None (greedy). ``gate`` replaces this object's gate for this call; keyword
        ``gate_changes`` (``mode``, ``call_threshold``, ``entropy_threshold``, ``budget``, ...)
        adjust it. ``logprobs``: None (off), or ``k`` >= 0: each SLM ``Token`` carries its
        log-probability and the ``k`` most likely alternatives (one more small read per step).
        ``retrieve_first`` (default: this object's) asks the delegate once with the question
        before the first token.
        A prompt longer than the model's context (``max_context``: its config's
        ``max_position_embeddings``) raises InputError; when prompt, output and evidence fill the
        context, generation stops with ``finish_reason="length"``.
        ``max_sentences`` ends the answer (finish reason ``stop``) after that many sentences.
        ``probe`` > 0: each ``Call`` event also carries (``Call.alone``) the SLM's own greedy next
        ``probe`` tokens at the call, <CALL> masked (evaluation: leakage, call precision).
        """
        if not isinstance(probe, int) or isinstance(probe, bool) or probe < 0:
            raise InputError(f"probe must be an integer >= 0 (tokens), got {probe!r}")
        if logprobs is not None and (not isinstance(logprobs, int) or isinstance(logprobs, bool) or logprobs < 0):
            raise InputError(f"logprobs must be None or an integer >= 0, got {logprobs!r}")
        if max_sentences is not None and (not isinstance(max_sentences, int) or isinstance(max_sentences, bool)
                                          or max_sentences < 1):
            raise InputError(f"max_sentences must be None or a positive integer, got {max_sentences!r}")
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise InputError(f"max_tokens must be a positive integer, got {max_tokens!r}")
        if isinstance(prompt, str) and not prompt:
            raise InputError("the prompt is empty: give some text to continue")
        cfg = (gate or self.gate).with_(**gate_changes) if gate_changes else (gate or self.gate)
        sampler = sampling.sampler() if isinstance(sampling, Sampling) else sampling
        needs_hidden = bool(getattr(self.delegate, "needs_hidden", False))
        run = Cascade(
            self.model,
            self.tokenizer,
            prompt,
            specials=self.specials,
            delegate=self.delegate,
            sampler=sampler,
            settings=RunSettings(
                max_tokens, cfg, self.injection, self.max_evidence_tokens, needs_hidden,
                retrieve_first=self.retrieve_first if retrieve_first is None else retrieve_first,
                placement=self.placement, logprobs=logprobs, max_sentences=max_sentences, probe=probe,
                max_context=self.max_context,
            ),
            reuse=self._cache_to_reuse(),
        )
        return Stream(self, run)

    def generate(
        self,
        prompt: str | Messages,
        *,
        max_tokens: int = 256,
        sampling: Sampling | Sampler | None = None,
        gate: GateConfig | None = None,
        retrieve_first: bool | None = None,
        max_sentences: int | None = None,
        probe: int = 0,
        **gate_changes: GateChange,
    ) -> GenerationResult:
        """Run :meth:`stream` to the end; the text (trailing text included), the stats (``stats.context``:
        the final context) and every call (same arguments)."""
        parts: list[str] = []
        calls: list[Call] = []
        evidence: list[Evidence] = []
        errors: list[DelegateError] = []
        done: Done | None = None
        for ev in self.stream(prompt, max_tokens=max_tokens, sampling=sampling, gate=gate,
                              retrieve_first=retrieve_first, max_sentences=max_sentences, probe=probe,
                              **gate_changes):
            if isinstance(ev, Token):
                parts.append(ev.text)
            elif isinstance(ev, Call):
                calls.append(ev)
            elif isinstance(ev, Evidence):
                evidence.append(ev)
            elif isinstance(ev, DelegateError):
                errors.append(ev)
            elif isinstance(ev, Done):
                done = ev
        assert done is not None  # the stream always ends with Done
        return GenerationResult("".join(parts) + done.trailing_text, done, calls, evidence, errors)

    def clear_prompt_cache(self) -> None:
        """Forget the kept KV cache (``reuse_prompt_cache``); the next prompt is prefilled whole."""
        self._prompt_cache = None

    def _cache_to_reuse(self) -> PromptCache | None:
        if not self.reuse_prompt_cache:
            self._prompt_cache = None
            return None
        if self._prompt_cache is None:
            self._prompt_cache = PromptCache(self.model)
        return self._prompt_cache


def _as_delegate(delegate: Delegate | Callable[[CallContext], object] | None) -> Delegate | None:
    if delegate is None or hasattr(delegate, "name") and callable(delegate) and not _is_plain_function(delegate):
        return delegate  # type: ignore[return-value]
    if callable(delegate):
        return CallbackDelegate(delegate)
    raise InputError(f"delegate must be a delegate object or a function, got {type(delegate).__name__}")


def _is_plain_function(obj: Any) -> bool:
    import types

    return isinstance(obj, (types.FunctionType, types.MethodType, types.BuiltinFunctionType))
