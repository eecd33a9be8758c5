"""One SLM, one KV cache, lazy decode steps with the gate fused in.

The decoder knows nothing about delegates or text. :meth:`Decoder.feed` appends tokens to the
KV cache (mlx-lm's ``make_prompt_cache``) and returns a :class:`Step`: the next token, the gate's
statistics and decision, all lazy ``mx.array`` values, plus a ``packed`` vector the decode loop
reads with one host sync. Prompts are processed as mlx-lm's ``generate_step`` does (all but the
last token in chunks, then the last one alone), so with the gate off the tokens match mlx-lm's
(except that the lacy special tokens, control tokens, are never emitted).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn
from mlx_lm.generate import generation_stream
from mlx_lm.models.cache import can_trim_prompt_cache, make_prompt_cache, trim_prompt_cache
from mlx_lm.sample_utils import greedy_sampler

from lacy_mlx.errors import LacyError
from lacy_mlx.gate import GateStats
from lacy_mlx.kernels.dispatch import gate_stats
from lacy_mlx.runtime.hidden import plain_forward, split_forward
from lacy_mlx.runtime.quantized import accelerate

Sampler = Callable[[mx.array], mx.array]


@dataclass
class Step:
    """Lazy outputs of one decode step (the logits row after the last fed token).

    ``token``: ``(1,)`` the token to emit when the gate stays closed (special lacy tokens masked
    out). ``stats``: the gate's statistics, None with the gate off.
    ``packed``: float32 ``[token, decision, entropy, p_call, p_top]`` (or int32 ``[token]`` with the
    gate off), then with ``logprobs`` on ``[logprob, top ids..., top logprobs...]``: the one array
    the loop synchronises. ``hidden``: ``(1, H)`` last hidden state when
    the decoder was built with ``need_hidden``. ``thresholds``: (entropy, call) used by the gate.
    """

    token: mx.array
    stats: GateStats | None
    packed: mx.array
    hidden: mx.array | None
    logits: mx.array
    thresholds: tuple[float, float] = (0.0, 0.0)
    _vals: list[float] | None = None

    def read(self) -> tuple[int, bool, float, float, float]:
        """Synchronise once; (token, fired, entropy, p_call, p_top). NaN scores are kept as NaN."""
        vals = self._vals = self.packed.tolist()
        if self.stats is None:
            return int(vals[0]), False, float("nan"), float("nan"), float("nan")
        return int(vals[0]), bool(vals[1]), vals[2], vals[3], vals[4]

    def logprob(self) -> tuple[float, tuple[tuple[int, float], ...]] | None:
        """After :meth:`read`: the token's log-probability and the top (id, log-probability) pairs,
        best first; None when the decoder was built without ``logprobs``."""
        vals = self._vals or []
        base = 1 if self.stats is None else 5
        if len(vals) <= base:
            return None
        k = (len(vals) - base - 1) // 2
        ids, lps = vals[base + 1 : base + 1 + k], vals[base + 1 + k :]
        return vals[base], tuple((int(i), float(v)) for i, v in zip(ids, lps))


class Decoder:
    """Decode steps of ``model`` with its own KV cache.

    ``call_id``: the <CALL> id (None: the model has none; p_call is 0). ``masked_ids``: ids never
    emitted (the lacy special tokens), whether the gate is on or off. ``need_hidden``: keep the last hidden
    state of each step (latent queries); uses :func:`~lacy_mlx.runtime.hidden.split_forward`.
    ``logprobs``: None (off), or also read the emitted token's log-probability and the top
    ``logprobs`` alternatives (of the distribution it was drawn from, lacy tokens masked).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        sampler: Sampler | None = None,
        call_id: int | None = None,
        masked_ids: Sequence[int] = (),
        need_hidden: bool = False,
        prefill_step_size: int = 2048,
        logprobs: int | None = None,
    ) -> None:
        self.model = model
        self.logprobs = logprobs
        self.sampler = sampler or greedy_sampler
        self.call_id = -1 if call_id is None else int(call_id)
        self.prefill_step_size = prefill_step_size
        accelerate(model)  # on the CPU, quantized layers onto kernels/cpu_quant.cpp (same results)
        self._forward = split_forward(model) if need_hidden else plain_forward(model)
        self._mask = mx.array(sorted(set(masked_ids)), dtype=mx.int32) if masked_ids else None
        self.cache = make_prompt_cache(model)
        self.offset = 0  # tokens in the cache

    def reset(self) -> None:
        """Start over with an empty KV cache (prefix injection re-prefills)."""
        self.cache = make_prompt_cache(self.model)
        self.offset = 0

    def adopt(self, cache: list, offset: int) -> None:
        """Continue from ``cache`` (mlx-lm's cache list for this model) holding ``offset`` tokens."""
        self.cache = cache
        self.offset = offset

    def trim(self, n: int) -> None:
        """Drop the last ``n`` tokens from the KV cache (mlx-lm's trim helper)."""
        if n <= 0:
            return
        if not can_trim_prompt_cache(self.cache):
            raise LacyError(
                "this model's KV cache cannot be trimmed (a rotating or recurrent cache): "
                "use a model with a plain KV cache for calls that need a rollback"
            )
        trim_prompt_cache(self.cache, n)
        self.offset -= n

    def probe(self, first: int, n: int, stop: set[int]) -> list[int]:
        """The model's own greedy continuation from ``first`` (lacy tokens masked), at most ``n``
        tokens, ending before a ``stop`` id; the KV cache is trimmed back to where it was."""
        out: list[int] = []
        tok = first
        fed = 0
        while tok not in stop and len(out) < n:
            out.append(tok)
            if len(out) == n:
                break
            with mx.stream(generation_stream):
                _, logits = self._forward(mx.array([[tok]], dtype=mx.int32), self.cache)
                if self._mask is not None:
                    logits = _mask_ids(logits, self._mask)
                nxt = mx.argmax(logits, axis=-1)
            fed += 1
            self.offset += 1
            tok = int(nxt.item())
        self.trim(fed)
        return out

    def feed(self, ids: Sequence[int] | mx.array, params: mx.array | None) -> Step:
        """Append ``ids`` (at least one) to the cache; the :class:`Step` for the position after them.

        ``params``: the gate params array (:func:`lacy_mlx.gate.gate_params`), None for the gate off.
        """
        ids = ids if isinstance(ids, mx.array) else mx.array(list(ids), dtype=mx.int32)
        n = ids.shape[0]
        if n == 0:
            raise LacyError("nothing to feed: the prompt encodes to zero tokens; give a non-empty prompt")
        with mx.stream(generation_stream):
            head = ids[:-1]
            while head.shape[0] > 0:  # as mlx-lm: chunks up to the last token, cache evaluated
                chunk = head[: self.prefill_step_size]
                self.model(chunk[None], cache=self.cache)
                mx.eval([c.state for c in self.cache])
                head = head[self.prefill_step_size :]
        self.offset += n
        return self._step(ids[-1:], params)

    def _step(self, token: mx.array, params: mx.array | None) -> Step:
        """Feed one token ``(1,)`` (may be lazy) and build the next step lazily; nothing is evaluated."""
        with mx.stream(generation_stream):
            hidden, logits = self._forward(token[None], self.cache)  # (1, H) or None, (1, V)
            if params is None:
                if self._mask is not None:  # gate off: the lacy tokens are still never output text
                    logits = _mask_ids(logits, self._mask)
                logprobs = logits - mx.logsumexp(logits, keepdims=True)
                tok = self.sampler(logprobs).reshape(1)
                if self.logprobs is None:
                    return Step(tok, None, tok, hidden, logits)
                packed = mx.concatenate([tok.astype(mx.float32), self._lp_parts(logprobs, tok)])
                return Step(tok, None, packed, hidden, logits)
            stats = gate_stats(logits, self.call_id, params)
            tok = self._sample_gated(logits).reshape(1)
            parts = [tok.astype(mx.float32), stats.decision.astype(mx.float32), stats.entropy, stats.p_call, stats.p_top]
            if self.logprobs is not None:
                masked = _mask_ids(logits, self._mask) if self._mask is not None else logits
                parts.append(self._lp_parts(masked - mx.logsumexp(masked, keepdims=True), tok))
            packed = mx.concatenate(parts)
        return Step(tok, stats, packed, hidden, logits)

    def _lp_parts(self, logprobs: mx.array, tok: mx.array) -> mx.array:
        """float32 ``[logprob of tok, top ids..., top logprobs...]`` from ``logprobs`` (1, V)."""
        lp = logprobs.astype(mx.float32)
        chosen = mx.take_along_axis(lp, tok.reshape(1, 1), axis=-1).reshape(1)
        k = min(int(self.logprobs or 0), lp.shape[-1])
        if k == 0:
            return chosen
        idx = mx.argpartition(-lp, kth=k - 1, axis=-1)[:, :k]  # (1, k), unordered
        vals = mx.take_along_axis(lp, idx, axis=-1)
        order = mx.argsort(-vals, axis=-1)
        idx, vals = mx.take_along_axis(idx, order, axis=-1), mx.take_along_axis(vals, order, axis=-1)
        return mx.concatenate([chosen, idx.astype(mx.float32).reshape(-1), vals.reshape(-1)])

    def advance(self, step: Step, params: mx.array | None, *, call_on_fire: bool) -> Step:
        """Speculatively build the step after ``step``, lazily: it feeds ``step.token``, or <CALL>
        where the gate fired and ``call_on_fire`` (inline injection keeps <CALL> in the context).

        The loop reads ``step`` while this one computes; when the gate fired, the loop trims or
        keeps the fed token and discards the returned step.
        """
        token = step.token
        if call_on_fire and step.stats is not None and self.call_id >= 0:
            token = mx.where(step.stats.decision, mx.array(self.call_id, dtype=token.dtype), token)
        self.offset += 1
        return self._step(token, params)

    def _sample_gated(self, logits: mx.array) -> mx.array:
        if self._mask is not None:  # the lacy tokens are control tokens, never output
            logits = _mask_ids(logits, self._mask)
        if self.sampler is greedy_sampler:  # argmax needs no normalisation: skip the logsumexp pass
            return mx.argmax(logits, axis=-1)
        return self.sampler(logits - mx.logsumexp(logits, keepdims=True))


def _mask_ids(logits: mx.array, ids: mx.array) -> mx.array:
    """``logits`` with the columns ``ids`` set to -inf."""
    neg = mx.full((logits.shape[0], ids.shape[0]), -mx.inf, dtype=logits.dtype)
    return mx.put_along_axis(logits, mx.broadcast_to(ids[None], neg.shape), neg, axis=-1)
