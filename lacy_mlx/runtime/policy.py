"""When the runtime asks for help: gate settings, the running-quantile call budget, and per-step policy.

The gate itself (:func:`lacy_mlx.kernels.dispatch.gate_stats`) runs lazily on the device inside each decode
step. This module holds the host side: which thresholds the next step uses (a call budget moves
them), and when calls are suppressed (cool-down after a call, a call cap, a sentence regenerated
after prefix injection). It hands the step a ``params`` array and never reads device values
itself: the decode loop feeds it the scores it already synchronised.
"""
from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass, replace
from typing import Any

import mlx.core as mx

from lacy_mlx.errors import InputError
from lacy_mlx.gate import MODES
from lacy_mlx.runtime.kinds import GateMode


@dataclass(frozen=True)
class GateConfig:
    """Gate settings.

    - ``mode``: ``call`` (p(<CALL>) >= ``call_threshold``), ``entropy`` (next-token entropy in nats
      >= ``entropy_threshold``), ``either`` (one of both), or ``off`` (plain mlx-lm decoding).
      A model without <CALL> has p(<CALL>) = 0: use ``entropy`` there.
    - ``budget``: optional target share of decode steps that call, in (0, 1). A running quantile
      over the last ``budget_window`` steps then sets the threshold of the mode's score
      (p(<CALL>) for ``call``/``either``, entropy for ``entropy``) so that about that share passes,
      as LaCy does at inference. The configured threshold holds for the first ``budget_warmup`` steps.
      A float starts a new quantile with each generation; a :class:`CallBudget` is used as is and
      keeps its state from one generation to the next (an evaluation over many short texts passes
      one per setting, so that every text after the first is gated at the quantile of the run).
    - ``min_gap``: decode steps after a call during which the gate stays closed (at least 1: the
      step right after a call never calls, so decoding always moves forward).
    - ``max_calls``: cap on calls per generation (None: no cap).
    - ``per_sentence``: at most this many calls per sentence (None: no limit). LaCy's evaluation
      calls once per sentence: a call's value is written before the next may start.
    - ``skip_first``: the gate stays closed for the answer's first this many tokens. A chat
      model's first word is uncertain whatever the question (SmolLM2's entropy there passes 3
      nats on most turns, factual or not), so an open gate there calls on every turn.
    """

    mode: GateMode = "call"
    call_threshold: float = 0.5
    entropy_threshold: float = 3.0
    budget: "float | CallBudget | None" = None
    budget_window: int = 256
    budget_warmup: int = 16
    min_gap: int = 1
    max_calls: int | None = None
    per_sentence: int | None = None
    skip_first: int = 0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise InputError(f"gate mode must be one of {sorted(MODES)}, got {self.mode!r}")
        if not 0.0 <= self.call_threshold <= 1.0:
            raise InputError(f"call_threshold is a probability in [0, 1], got {self.call_threshold}")
        if self.entropy_threshold < 0:
            raise InputError(f"entropy_threshold is in nats and >= 0, got {self.entropy_threshold}")
        if self.budget is not None and not isinstance(self.budget, CallBudget) and not 0.0 < self.budget < 1.0:
            raise InputError(f"budget is a share of tokens in (0, 1), e.g. 0.2; got {self.budget}")
        if self.budget_window < 8 or self.budget_warmup < 0:
            raise InputError("budget_window must be >= 8 and budget_warmup >= 0")
        if self.min_gap < 0 or (self.max_calls is not None and self.max_calls < 0):
            raise InputError("min_gap and max_calls must be >= 0")
        if not isinstance(self.skip_first, int) or self.skip_first < 0:
            raise InputError(f"skip_first is a number of tokens >= 0, got {self.skip_first!r}")
        if self.per_sentence is not None and self.per_sentence < 1:
            raise InputError(f"per_sentence must be >= 1 (or None for no limit), got {self.per_sentence}")

    def with_(self, **changes: Any) -> "GateConfig":
        """A copy with ``changes`` applied (validated); None values are ignored."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    @classmethod
    def from_section(cls, gate: dict[str, Any], **defaults: Any) -> "GateConfig":
        """Build from a config.json ``lacy.gate`` dict (unknown keys are ignored)."""
        known = {k: v for k, v in gate.items() if k in cls.__dataclass_fields__}
        return cls(**{**defaults, **known})

    @property
    def budget_score(self) -> str:
        """Which score the budget moves the threshold of: ``p_call`` or ``entropy``."""
        return "entropy" if self.mode == "entropy" else "p_call"


class CallBudget:
    """A running quantile: the threshold that about ``share`` of the recent scores reach.

    ``observe(score)`` adds one step's score; ``threshold()`` is the ``1 - level()`` quantile of
    the last ``window`` scores (None until ``warmup`` scores were seen). Kept sorted with
    ``bisect`` so a step costs O(window) memory moves and no numpy call.

    ``match_calls``: aim at the share of steps that *call*, not the share whose score passes.
    Cool-downs and one-call-per-sentence suppress passing steps, and bursts of high scores pass
    before the quantile moves, so calls made drift from ``share``. With it on, the quantile level
    is ``share`` plus ``MATCH_GAIN`` times the calls owed (``share`` per observed step, minus the
    calls reported through :meth:`called`): an integral controller, so that over ``T`` steps the
    share of steps that called is within ``~1 / (MATCH_GAIN * T)`` of ``share`` unless the level
    sits at its bounds (where the caps allow fewer calls than ``share``, the gate then calls
    wherever it may).
    """

    MIN_LEVEL, MAX_LEVEL = 1e-3, 0.95
    MATCH_GAIN = 1 / 64  # level moved per call owed; the debt that holds a level L is (L - share) / gain calls

    def __init__(self, share: float, window: int = 256, warmup: int = 16, *, match_calls: bool = False) -> None:
        if not 0.0 < share < 1.0:
            raise InputError(f"budget share must be in (0, 1), got {share}")
        self.share = share
        self.window = window
        self.warmup = max(1, warmup)
        self.match_calls = match_calls
        self._recent: deque[float] = deque()
        self._sorted: list[float] = []
        self._owed = 0.0  # match_calls: share per observed step minus calls made

    def __repr__(self) -> str:
        return f"CallBudget({self.share:g}{', match_calls=True' if self.match_calls else ''})"

    def observe(self, score: float) -> None:
        """Record one decode step's score (NaN counts as the lowest score)."""
        score = float(score) if score == score else float("-inf")
        self._recent.append(score)
        bisect.insort(self._sorted, score)
        if len(self._recent) > self.window:
            old = self._recent.popleft()
            del self._sorted[bisect.bisect_left(self._sorted, old)]
        self._settle(self.share)

    def called(self) -> None:
        """The step observed last called (the calls ``match_calls`` counts)."""
        self._settle(-1.0)

    def _settle(self, delta: float) -> None:
        # Clamped so the level never winds up past its bounds: it moves back as soon as calls do.
        low, high = ((self.MIN_LEVEL - self.share) / self.MATCH_GAIN, (self.MAX_LEVEL - self.share) / self.MATCH_GAIN)
        self._owed = min(high, max(low, self._owed + delta))

    def level(self) -> float:
        """The share of the window's scores the threshold lets through."""
        if not self.match_calls:
            return self.share
        return self.share + self.MATCH_GAIN * self._owed

    def threshold(self) -> float | None:
        """The score that about ``level()`` of the window reaches, or None while warming up."""
        n = len(self._sorted)
        if n < self.warmup:
            return None
        # Index of the (1 - level) quantile; scores >= it are about `level` of the window.
        idx = min(n - 1, max(0, int(round((1.0 - self.level()) * n))))
        return self._sorted[idx]


class GatePolicy:
    """Per-generation host state of the gate: the params of the next step and call suppression."""

    def __init__(self, config: GateConfig, *, has_call_token: bool) -> None:
        self.config = config
        self.has_call_token = has_call_token
        if isinstance(config.budget, CallBudget):
            self.budget: CallBudget | None = config.budget  # shared: its state carries across generations
        else:
            self.budget = (
                CallBudget(config.budget, config.budget_window, config.budget_warmup) if config.budget else None
            )
        self.calls = 0
        self._sentence_calls = 0
        # Without <CALL>, p_call is 0: the call criterion can never be meant to pass.
        self._mode = config.mode
        if not has_call_token and config.mode in ("call", "either"):
            self._mode = "off" if config.mode == "call" else "entropy"
        self._cooldown = config.skip_first  # counts built steps, as after a call
        self._hold_until_sentence_end = False
        self._params_key: tuple[float, float, float] | None = None
        self._params: mx.array | None = None
        self.last_thresholds = (config.entropy_threshold, config.call_threshold)

    @property
    def enabled(self) -> bool:
        """False in mode ``off``: the decode loop then runs plain mlx-lm steps with no gate at all."""
        return self.config.mode != "off"

    def thresholds(self) -> tuple[float, float]:
        """(entropy_threshold, call_threshold) in force now, after the budget's adjustment."""
        ent, call = self.config.entropy_threshold, self.config.call_threshold
        q = self.budget.threshold() if self.budget else None
        if q is not None:
            if self.config.budget_score == "entropy":
                ent = max(q, 0.0)
            else:
                call = min(max(q, 1e-9), 1.0)  # p_call 0 never passes, even when most scores are 0
        return ent, call

    def next_params(self) -> mx.array:
        """The gate ``params`` array for the next step built; mode off while calls are suppressed.

        Call once per step built: a cool-down counts built steps, so it holds for exactly
        ``min_gap`` steps even though the loop builds each step before reading the previous one.
        """
        ent, call = self.thresholds()
        is_open = self.open
        if self._cooldown > 0:
            self._cooldown -= 1
        mode = MODES[self._mode] if is_open else 0
        self.last_thresholds = (ent, call)
        key = (float(mode), ent, call)
        if key != self._params_key:  # reuse the array while nothing moved
            self._params_key = key
            self._params = mx.array(key, dtype=mx.float32)
        return self._params  # type: ignore[return-value]

    @property
    def open(self) -> bool:
        """Whether a call may happen at the next step."""
        cap = self.config.max_calls
        return (
            self.enabled
            and self._cooldown <= 0
            and not self._hold_until_sentence_end
            and (cap is None or self.calls < cap)
        )

    def after_step(self, entropy: float, p_call: float) -> None:
        """Account one decode step whose scores the loop synchronised."""
        if self.budget is not None:
            self.budget.observe(entropy if self.config.budget_score == "entropy" else p_call)

    def after_call(self) -> None:
        """Account one call: start the cool-down (at least the step right after the call, so a
        model that always calls still emits a token between calls)."""
        self.calls += 1
        self._sentence_calls += 1
        if self.budget is not None:
            self.budget.called()
        self._cooldown = max(1, self.config.min_gap)
        if self.config.per_sentence is not None and self._sentence_calls >= self.config.per_sentence:
            self._hold_until_sentence_end = True

    def hold_until_sentence_end(self) -> None:
        """Keep the gate closed until :meth:`sentence_ended` (prefix injection regenerates a sentence)."""
        self._hold_until_sentence_end = True

    def sentence_ended(self) -> None:
        """A sentence boundary was emitted."""
        self._hold_until_sentence_end = False
        self._sentence_calls = 0

    def reason(self, entropy: float, p_call: float, thresholds: tuple[float, float]) -> str:
        """Why the gate fired, from the synchronised scores and the step's (entropy, call) thresholds."""
        ent_t, call_t = thresholds
        mode = self.config.mode
        by_call = self.has_call_token and mode in ("call", "either") and p_call >= call_t
        by_ent = mode in ("entropy", "either") and entropy >= ent_t
        return "call+entropy" if by_call and by_ent else ("call" if by_call else "entropy")
