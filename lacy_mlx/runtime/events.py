"""The events :meth:`lacy_mlx.Lacy.stream` yields, and what :meth:`lacy_mlx.Lacy.generate` returns.

One generation yields, in order: ``Token`` events, and for each call a ``Call`` event followed by
either an ``Evidence`` event (the delegate helped) or a ``DelegateError`` event (it raised, timed
out or found nothing; decoding goes on without help); finally one ``Done`` event with the
statistics. The output text is the ``Token`` texts followed by ``Done.trailing_text`` (what the
detokenizer held back until the end): :func:`output_text` of each event, concatenated.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from lacy_mlx.runtime.kinds import CallReason, FinishReason, HelpKind, InjectionUsed, TokenSource

if TYPE_CHECKING:
    from lacy_mlx.store.records import SearchHit


@dataclass(frozen=True)
class Token:
    """One output token.

    ``text`` is the new text segment from mlx-lm's streaming detokenizer (may be empty while a
    multi-byte character is incomplete). ``source`` is ``"model"`` for the SLM's own tokens and
    ``"delegate"`` for tokens a model delegate wrote. ``entropy`` (nats) and ``p_call`` are the
    gate's statistics at this step (None when the gate is off or for delegate tokens).
    ``logprob`` / ``top_logprobs`` (``stream(..., logprobs=k)`` only, SLM tokens only): the
    token's log-probability and the ``k`` most likely (id, log-probability) pairs, best first.
    """

    text: str
    id: int
    step: int
    source: TokenSource = "model"
    entropy: float | None = None
    p_call: float | None = None
    logprob: float | None = None
    top_logprobs: tuple[tuple[int, float], ...] = ()


@dataclass(frozen=True)
class Call:
    """The gate fired at decode step ``step`` and a delegate ran.

    ``reason``: ``call`` (p(<CALL>) passed its threshold), ``entropy``, or ``call+entropy``; or
    ``first`` for retrieval before the answer (``retrieve_first``: step -1, no gate scores).
    ``threshold``: ``(entropy_threshold, call_threshold)`` in force at that step (a budget moves them).
    ``query``: the text query, or ``"<latent>"`` for a query-tower vector, or the text a model
    delegate continued (its tail). ``hits``: the store's :class:`~lacy_mlx.store.SearchHit` list
    (empty for other delegates). ``ms``: wall time of the delegate. ``alone``: with
    ``stream(..., probe=n)``, what the SLM would have written here by itself (its greedy next
    ``n`` tokens, <CALL> masked; the cache is rolled back after): evaluation scores leakage and
    call precision from it. None without ``probe``.
    """

    step: int
    reason: CallReason
    entropy: float
    p_call: float
    threshold: tuple[float, float]
    delegate: str
    query: str | None = None
    hits: tuple[SearchHit, ...] = ()
    ms: float = 0.0
    alone: str | None = None


@dataclass(frozen=True)
class Evidence:
    """What a delegate supplied and how it entered the SLM's context.

    ``kind``: ``evidence`` (passages the model reads, not part of the output) or ``continuation``
    (text that becomes part of the output; its tokens follow as ``Token`` events with
    ``source="delegate"``). ``injection``: ``inline`` (appended to the KV cache between
    <EVIDENCE> and </EVIDENCE>), ``prefix`` (passages put in the prompt, current sentence
    regenerated) or ``append`` (continuation tokens appended). ``sources``: where it came from
    (document titles / external ids, a model name, a callback name).
    """

    step: int
    text: str
    kind: HelpKind
    injection: InjectionUsed
    sources: tuple[str, ...] = ()
    tokens: int = 0


@dataclass(frozen=True)
class DelegateError:
    """A delegate failed at step ``step``; generation went on without help. ``reason`` says why."""

    step: int
    delegate: str
    reason: str
    error: str = ""  # exception type name, "timeout" or "empty"


@dataclass(frozen=True)
class Done:
    """End of a generation and its statistics.

    ``finish_reason``: ``stop`` (end-of-sequence token), ``length`` (``max_tokens`` reached) or
    ``cancelled`` (:meth:`lacy_mlx.runtime.stream.Stream.cancel`). ``cached_tokens``: prompt
    tokens taken from the kept KV cache instead of being prefilled (``reuse_prompt_cache``).
    ``tokens`` counts output tokens (model and delegate); ``steps`` counts SLM decode steps;
    ``call_rate`` = calls / tokens (:func:`call_rate`; 0 when no token was generated). Times are
    seconds of host wall time: ``gate_s`` is the host work of the gate policy (thresholds, budget, decision handling; the gate math itself runs
    fused into the device step), ``retrieval_s`` the retrieval delegates, ``delegate_s`` all
    delegates (retrieval included), ``inject_s`` feeding evidence into the SLM.
    ``host_syncs`` counts device-to-host synchronisations in the decode loop (one per step).
    ``trailing_text``: output text the streaming detokenizer held back until the end (the last
    word, an incomplete character); it follows the last ``Token``'s text.
    ``context``: the token ids the SLM's KV cache ended with (prompt, output, <CALL> and evidence
    blocks), in order.
    """

    finish_reason: FinishReason
    prompt_tokens: int
    tokens: int
    steps: int
    calls: int
    call_rate: float
    seconds: float
    tokens_per_s: float
    prompt_s: float
    gate_s: float
    retrieval_s: float
    delegate_s: float
    inject_s: float
    host_syncs: int
    delegate_errors: int = 0
    cached_tokens: int = 0
    trailing_text: str = ""
    context: tuple[int, ...] = ()


Event = Token | Call | Evidence | DelegateError | Done


def output_text(ev: Event) -> str:
    """The output text ``ev`` adds: a ``Token``'s text, the ``Done``'s trailing text, else ""."""
    if isinstance(ev, Token):
        return ev.text
    if isinstance(ev, Done):
        return ev.trailing_text
    return ""


def call_rate(calls: int, tokens: int) -> float | None:
    """Calls per generated token: the one meaning of "call rate" (``Done.call_rate``, the QA
    report, the evaluation metrics, training's logs, where a token is a position and a call a
    <CALL> target). None when no token was generated.

    The gate's ``budget`` is another number: the share of decode steps that call. A step that
    calls writes no token of its own, so the call rate of a budget ``b`` is about ``b / (1 - b)``.
    """
    return calls / tokens if tokens > 0 else None


@dataclass
class GenerationResult:
    """What :meth:`lacy_mlx.Lacy.generate` returns: the output text, the stats and every call."""

    text: str
    stats: Done
    calls: list[Call] = field(default_factory=list)
    evidence: list[Evidence] = field(default_factory=list)
    errors: list[DelegateError] = field(default_factory=list)

    @property
    def sources(self) -> list[str]:
        """Distinct sources of the evidence used, in first-use order."""
        seen: dict[str, None] = {}
        for ev in self.evidence:
            for src in ev.sources:
                seen.setdefault(src, None)
        return list(seen)
