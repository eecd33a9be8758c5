"""The decode loop: greedy/sampled decoding with the gate, delegates and injection.

Per step the loop builds the next step lazily before reading the current one (as mlx-lm's
``generate_step`` does), so the host work of a step overlaps the device's next forward pass, and
reads the current step with one host sync (token, decision and scores packed in one array).
When the gate fired, the speculative next step is discarded: it fed <CALL> (inline injection,
which keeps it) or the greedy token (trimmed from the cache when help replaces it).
"""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import mlx.core as mx

from lacy_mlx.errors import InputError
from lacy_mlx.runtime.decoder import Decoder, Step
from lacy_mlx.runtime.delegates.base import CallContext, Delegate, Help, Outcome, run_delegate
from lacy_mlx.runtime.events import Call, DelegateError, Done, Event, Evidence, call_rate
from lacy_mlx.runtime.inject import (
    Messages,
    Placement,
    bounded_ids,
    bounded_passages,
    encode_prompt,
    inline_evidence_ids,
    titled_passages,
)
from lacy_mlx.runtime.kinds import FinishReason, ResolvedInjection, TokenSource
from lacy_mlx.runtime.output import OutputText
from lacy_mlx.runtime.policy import GateConfig, GatePolicy
from lacy_mlx.runtime.prompt_cache import PromptCache
from lacy_mlx.tokens import SpecialIds


@dataclass(frozen=True)
class Scores:
    """The gate's scores at one decode step, as read from the device."""

    entropy: float  # of the next-token distribution, nats
    p_call: float  # p(<CALL>)
    p_top: float  # probability of the greedy token: the text query's per-token confidence


NO_SCORES = Scores(0.0, 0.0, 1.0)  # a delegate's continuation tokens: no gate ran, full confidence


@dataclass(frozen=True)
class RunSettings:
    """Settings of one generation (resolved by :class:`lacy_mlx.Lacy`)."""

    max_tokens: int
    gate: GateConfig
    injection: ResolvedInjection
    max_evidence_tokens: int = 256
    need_hidden: bool = False
    retrieve_first: bool = False  # ask the delegate once with the question before the first token
    placement: Placement = "system"  # where prefix injection puts passages in chat messages
    max_sentences: int | None = None  # stop (finish "stop") once this many sentences are out
    logprobs: int | None = None
    probe: int = 0  # > 0: each Call carries the SLM's own next `probe` tokens at the call (Call.alone)
    max_context: int | None = None  # the model's position limit; None: unlimited


LogProb = tuple[float, tuple[tuple[int, float], ...]]
"""A token's log-probability and its top alternatives ``((id, log-probability), ...)``."""


class _Timers:
    """Host seconds per part of the run (``Done``'s ``*_s`` fields)."""

    def __init__(self) -> None:
        self.gate = self.retrieval = self.delegate = self.inject = self.prompt = 0.0


class Cascade:
    """One generation; iterate it for events. ``context`` ends as the ids the SLM's cache holds.

    ``cancel``: when set (from any thread), the loop stops before its next step and ends with
    ``Done(finish_reason="cancelled")``. ``reuse``: a :class:`PromptCache` whose common prefix
    with the prompt is not prefilled again (``Done.cached_tokens``); after a run that finished, it
    holds this run's context, for the next request of a conversation.
    """

    def __init__(self, model: Any, tokenizer: Any, prompt: str | Messages, *, specials: SpecialIds,
                 delegate: Delegate | None, sampler: Any, settings: RunSettings,
                 cancel: threading.Event | None = None, reuse: PromptCache | None = None) -> None:
        self.tokenizer = tokenizer
        self.prompt_in = prompt
        self.specials = specials
        self.delegate = delegate
        self.settings = settings
        self.policy = GatePolicy(settings.gate, has_call_token=specials.call is not None)
        self.gated = self.policy.enabled
        self.inline = settings.injection == "inline"
        self.dec = Decoder(
            model,
            sampler=sampler,
            call_id=specials.call,
            masked_ids=specials.all,  # control tokens: never streamed as text, gate on or off
            need_hidden=settings.need_hidden and self.gated,
            logprobs=settings.logprobs,
        )
        hold = self.gated and not self.inline and delegate is not None
        self.out = OutputText(tokenizer, hold_sentences=hold)
        self.eos = set(tokenizer.eos_token_ids)
        self.prompt = encode_prompt(tokenizer, prompt)
        self.max_context = settings.max_context or 2**62
        if len(self.prompt.ids) >= self.max_context:
            raise InputError(
                f"the prompt is {len(self.prompt.ids)} tokens but the model reads at most {self.max_context} "
                f"(its max_position_embeddings), with room for an answer: shorten the prompt"
            )
        self.context: list[int] = list(self.prompt.ids)
        self.timers = _Timers()
        self.steps = self.syncs = self.errors = self.sentences = 0
        self.cancel = cancel or threading.Event()
        self.reuse = reuse
        self.cached_tokens = 0
        self._speculated = False  # whether a step after the one being read was built (and fed)

    # ---- the loop --------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Event]:
        t0 = time.perf_counter()
        if self.settings.retrieve_first and self.delegate is not None:
            yield from self._retrieve_first()
        step = self._feed_prompt()
        finish: FinishReason = "length"
        while len(self.out) < self.settings.max_tokens:
            if self.cancel.is_set():
                finish = "cancelled"
                break
            # Build the next step before reading this one (overlap), unless this one is the last.
            nxt = None
            if len(self.out) + 1 < self.settings.max_tokens and self._room() > 1:
                nxt = self.dec.advance(step, self._params(), call_on_fire=self.inline)
                nxt.thresholds = self.policy.last_thresholds
                mx.async_eval(nxt.packed)
            self._speculated = nxt is not None
            token, fired, entropy, p_call, p_top = step.read()
            scores = Scores(entropy, p_call, p_top)
            self.syncs += 1
            self.steps += 1
            if self.steps == 1:
                self.timers.prompt = time.perf_counter() - t0
            if self.gated:
                tg = time.perf_counter()
                self.policy.after_step(scores.entropy, scores.p_call)
                self.timers.gate += time.perf_counter() - tg
            if fired:
                nxt = yield from self._on_call(step, token, scores)
                if nxt is None:
                    finish = "stop"
                    break
            elif token in self.eos:
                finish = "stop"
                break
            else:
                self.context.append(token)
                yield from self._emit(token, scores, lp=step.logprob())
            if self.settings.max_sentences is not None and self.sentences >= self.settings.max_sentences:
                finish = "stop"
                break
            if nxt is None or self._room() < 1:  # the last token was emitted, or the context is full
                break
            step = nxt
            if self.steps % 256 == 0:
                mx.clear_cache()
        held, trailing = self.out.flush()
        yield from held
        if self.reuse is not None:
            self._keep_cache()
        yield self._done(finish, time.perf_counter() - t0, trailing)

    def _room(self) -> int:
        """Positions left in the model's context after the tokens the cache holds."""
        return self.max_context - len(self.context)

    def _feed_prompt(self) -> Step:
        ids = self.prompt.ids
        if self.reuse is not None:
            self.cached_tokens = self.reuse.reuse(ids)
            self.dec.adopt(self.reuse.cache, self.cached_tokens)
            self.reuse.ids = []  # until this run finishes, the cache's content is not known
        return self._feed(ids[self.cached_tokens :])

    def _keep_cache(self) -> None:
        """Hand the cache to ``reuse``: it holds ``context`` (plus at most one speculated token)."""
        assert self.reuse is not None
        self.reuse.cache = self.dec.cache
        self.reuse.commit(self.context[: min(self.dec.offset, len(self.context))])

    def _params(self) -> mx.array | None:
        if not self.gated:
            return None
        tg = time.perf_counter()
        params = self.policy.next_params()
        self.timers.gate += time.perf_counter() - tg
        return params

    def _feed(self, ids: Any) -> Step:
        params = self._params()
        step = self.dec.feed(ids, params)
        step.thresholds = self.policy.last_thresholds
        return step

    def _emit(self, token: int, scores: Scores, source: TokenSource = "model",
              lp: LogProb | None = None) -> Iterator[Event]:
        gated = self.gated and source == "model"
        events, ended = self.out.add(
            token, self.steps - 1, source=source, entropy=scores.entropy if gated else None,
            p_call=scores.p_call if gated else None, confidence=scores.p_top if gated else 1.0, logprob=lp,
        )
        yield from events
        if ended:
            self.sentences += 1
            self.policy.sentence_ended()

    # ---- calls -----------------------------------------------------------------------------

    def _on_call(self, step: Step, token: int, scores: Scores) -> Iterator[Event]:
        """Run the delegate and inject its help; returns the next step (None: generation stopped)."""
        if self._room() < 8:  # no room left for help in the model's context: decode on alone
            return (yield from self._decode_on(token, scores))
        tg = time.perf_counter()
        reason = self.policy.reason(scores.entropy, scores.p_call, step.thresholds)
        self.policy.after_call()
        self.timers.gate += time.perf_counter() - tg
        alone = None
        if self.settings.probe > 0:  # the speculative step is dropped: the paths below re-feed what they need
            self._drop_speculated()
            alone = self.tokenizer.decode(self.dec.probe(token, self.settings.probe, self.eos))
        outcome = self._run_delegate(step, scores)
        yield Call(self.steps - 1, reason, scores.entropy, scores.p_call, step.thresholds, self._delegate_name(),
                   outcome.query, tuple(outcome.hits), outcome.seconds * 1e3, alone)
        help_ = outcome.help
        if help_ is None:
            self.errors += 1
            yield DelegateError(self.steps - 1, self._delegate_name(), outcome.reason, outcome.error)
            return (yield from self._decode_on(token, scores, step.logprob()))
        t_inj = time.perf_counter()
        try:
            if help_.kind == "continuation":
                return (yield from self._append_continuation(help_, token, scores, step.logprob()))
            if self.inline:
                return (yield from self._inject_inline(help_))
            return (yield from self._inject_prefix(help_))
        finally:
            self.timers.inject += time.perf_counter() - t_inj

    def _retrieve_first(self) -> Iterator[Event]:
        """Retrieval before the answer: the delegate sees the question alone; its passages go
        into the prompt before the first token (the baseline the gate is measured against)."""
        outcome = self._run_delegate(None, NO_SCORES)
        yield Call(-1, "first", 0.0, 0.0, (), self._delegate_name(), outcome.query, tuple(outcome.hits),
                   outcome.seconds * 1e3)
        help_ = outcome.help
        if help_ is None or help_.kind != "evidence":
            self.errors += 1
            yield DelegateError(-1, self._delegate_name(), outcome.reason or "no passages", outcome.error)
            return
        budget = min(self.settings.max_evidence_tokens, self._room() - 8 * (len(help_.passages) + 2))
        passages = bounded_passages(self.tokenizer, titled_passages(help_.passages, help_.hits), budget)
        self.prompt = encode_prompt(self.tokenizer, self.prompt_in, placement=self.settings.placement,
                                    passages=passages)
        self.context = list(self.prompt.ids)
        yield Evidence(-1, "\n".join(passages), "evidence", "prefix", help_.sources, len(self.prompt.ids))

    def _run_delegate(self, step: Step | None, scores: Scores) -> Outcome:
        if self.delegate is None:
            return Outcome(None, 0.0, "no delegate is configured: give a knowledge store (db=...) or a helper "
                           "(delegate=...)", "none")
        tokens, confs = self.out.sentence_pieces()
        ctx = CallContext(
            step=max(self.steps - 1, 0),
            prompt=self.prompt.text,
            question=self.prompt.question,
            text=self.out.current_text(),
            sentence_tokens=tokens,
            sentence_confidence=confs,
            hidden=step.hidden[0] if step is not None and step.hidden is not None else None,
            entropy=scores.entropy,
            p_call=scores.p_call,
        )
        outcome = run_delegate(self.delegate, ctx)
        self.timers.delegate += outcome.seconds
        if getattr(self.delegate, "kind", "") == "retrieval":
            self.timers.retrieval += outcome.seconds
        return outcome

    def _delegate_name(self) -> str:
        return getattr(self.delegate, "name", "none") if self.delegate is not None else "none"

    def _decode_on(self, token: int, scores: Scores, lp: LogProb | None = None) -> Iterator[Event]:
        """No help: emit the SLM's own token, as if the gate had not fired."""
        # The speculative step fed <CALL> (inline) or this token with the pre-call gate params:
        # trim it and feed the token again so the cool-down applies to the step after it.
        self._drop_speculated()
        if token in self.eos:
            return None
        self.context.append(token)
        yield from self._emit(token, scores, lp=lp)
        return self._feed([token])

    def _drop_speculated(self) -> None:
        if self._speculated:
            self.dec.trim(1)
            self._speculated = False

    def _append_continuation(self, help_: Help, token: int, scores: Scores,
                             lp: LogProb | None = None) -> Iterator[Event]:
        room = min(self.settings.max_tokens - len(self.out), self.settings.max_evidence_tokens, self._room() - 1)
        ids, text = bounded_ids(self.tokenizer, help_.text, room)
        if not ids:
            return (yield from self._decode_on(token, scores, lp))
        self._drop_speculated()  # the delegate's text replaces the speculative token
        yield Evidence(self.steps - 1, text, "continuation", "append", help_.sources, len(ids))
        for tid in ids:
            yield from self._emit(tid, NO_SCORES, source="delegate")
        self.context.extend(ids)
        return self._feed(ids)

    def _inject_inline(self, help_: Help) -> Iterator[Event]:
        # <CALL> <EVIDENCE> ... </EVIDENCE> and one position to decode from must fit the context.
        room = min(self.settings.max_evidence_tokens, self._room() - 4)
        ids, text = inline_evidence_ids(self.tokenizer, help_.text, self.specials, room)
        yield Evidence(self.steps - 1, text, "evidence", "inline", help_.sources, len(ids))
        call = [self.specials.call]
        feed = ids if self._speculated else call + ids  # the speculative step fed <CALL> already
        self._speculated = False
        self.context.extend(call + ids)  # type: ignore[arg-type]
        return self._feed(feed)

    def _inject_prefix(self, help_: Help) -> Iterator[Event]:
        self.out.drop_held()
        # The passages' numbering and heading take a few tokens beyond the passages themselves.
        budget = min(self.settings.max_evidence_tokens, self._room() - 8 * (len(help_.passages) + 2))
        passages = bounded_passages(self.tokenizer, titled_passages(help_.passages, help_.hits), budget)
        prompt = encode_prompt(self.tokenizer, self.prompt_in, placement=self.settings.placement, passages=passages)
        self.context = list(prompt.ids) + list(self.out.ids)
        yield Evidence(self.steps - 1, "\n".join(passages), "evidence", "prefix", help_.sources, len(prompt.ids))
        self.policy.hold_until_sentence_end()  # FLARE: one retrieval per sentence
        self.dec.reset()
        return self._feed(self.context)

    def _done(self, finish: FinishReason, seconds: float, trailing_text: str) -> Done:
        gen_s = max(seconds - self.timers.prompt, 1e-9)
        n = len(self.out.ids)
        return Done(
            finish_reason=finish,
            prompt_tokens=len(self.prompt.ids),
            tokens=n,
            steps=self.steps,
            calls=self.policy.calls,
            call_rate=call_rate(self.policy.calls, n) or 0.0,
            seconds=seconds,
            tokens_per_s=n / gen_s,
            prompt_s=self.timers.prompt,
            gate_s=self.timers.gate,
            retrieval_s=self.timers.retrieval,
            delegate_s=self.timers.delegate,
            inject_s=self.timers.inject,
            host_syncs=self.syncs,
            delegate_errors=self.errors,
            cached_tokens=self.cached_tokens,
            trailing_text=trailing_text,
            context=tuple(self.context),
        )
