"""Model delegate: a bigger mlx-lm model writes the next word or fact span (the LaCy cascade).

At each call it continues the detokenised text so far (prompt + output) greedily until
``max_words`` words are complete, and that text is appended to the SLM's output and context.
It keeps its own KV cache across calls (:class:`~lacy_mlx.runtime.prompt_cache.PromptCache`):
the new text is tokenised with its own tokenizer, the cache is trimmed back to the common token
prefix with the previous call and only the rest is prefilled.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import mlx.core as mx
from mlx_lm.generate import generate_step

from lacy_mlx.runtime.delegates.base import CallContext, Help
from lacy_mlx.runtime.kinds import DelegateKind
from lacy_mlx.runtime.prompt_cache import PromptCache

# Context tokens decoded with the new ones, so their leading space or joiner comes out right.
_ANCHOR = 8
# A word: a maximal run of letters/digits (with ' or -), or one other visible symbol.
_SPAN = r"\s*(?:[\w'’\-]+(?![\w'’\-])|[^\w\s])"


class ModelDelegate:
    """Continue the text with ``model`` (an mlx-lm model) for one word or fact span.

    ``max_words``: words in the span (a word is a run of letters/digits, or one punctuation mark).
    ``max_tokens``: hard cap on the tokens generated per call. ``reused_tokens`` and
    ``prefilled_tokens`` count, over the delegate's life, cache hits and tokens processed.
    """

    kind: DelegateKind = "model"
    needs_hidden = False

    def __init__(
        self, model: Any, tokenizer: Any, *, max_words: int = 1, max_tokens: int = 8, name: str = "model"
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.max_words = max(1, int(max_words))
        self.max_tokens = max(1, int(max_tokens))
        self.name = name
        self.prompt_cache = PromptCache(model)
        self.reused_tokens = 0
        self.prefilled_tokens = 0
        self._complete = re.compile(rf"(?:{_SPAN}){{{self.max_words}}}")

    @classmethod
    def load(cls, path_or_repo: str | Path, **kwargs: Any) -> "ModelDelegate":
        """Load the helper model with ``mlx_lm.load`` (a local MLX folder or a Hugging Face repo id)."""
        from mlx_lm import load

        model, tokenizer = load(str(path_or_repo))
        kwargs.setdefault("name", Path(str(path_or_repo)).name or str(path_or_repo))
        return cls(model, tokenizer, **kwargs)

    def __call__(self, ctx: CallContext) -> Help:
        ids = list(self.tokenizer.encode(ctx.full_text))
        common = self.prompt_cache.reuse(ids)
        self.reused_tokens += common
        self.prefilled_tokens += len(ids) - common
        remaining = ids[common:]
        generated: list[int] = []
        span: str | None = None
        text: str | None = None
        for token, _ in generate_step(
            mx.array(remaining), self.model, max_tokens=self.max_tokens, prompt_cache=self.cache
        ):
            if token in self.tokenizer.eos_token_ids:
                break
            generated.append(token)
            text = self._new_text(ids, generated)
            span = self._span(text)
            if span is not None:
                break
        # generate_step computes one token ahead: keep the cache exactly at ids + generated.
        self.prompt_cache.commit(ids + generated)
        out = span if span is not None else (text or "")  # ended early (EOS, max_tokens): all of it
        return Help(kind="continuation", text=out, sources=(self.name,), query=ctx.full_text[-80:])

    def _new_text(self, ids: list[int], generated: list[int]) -> str:
        """The text ``generated`` adds after ``ids``, spaces included, as decoding them together spells it.

        Decoding the new tokens alone (or through a streaming detokenizer, which trims the first
        token's leading space) would glue the helper's word to the text before it.
        """
        anchor = ids[-_ANCHOR:]
        base = self.tokenizer.decode(anchor)
        full = self.tokenizer.decode(anchor + generated)
        return full[len(base):] if full.startswith(base) else self.tokenizer.decode(generated)

    @property
    def cache(self) -> list:
        """The helper's mlx-lm KV cache (kept across calls)."""
        return self.prompt_cache.cache

    @property
    def cached_ids(self) -> list[int]:
        """The token ids its cache holds."""
        return self.prompt_cache.ids

    def _span(self, text: str) -> str | None:
        """The first ``max_words`` words of ``text`` once a boundary follows them, else None."""
        if text.endswith("\ufffd"):  # a character split across byte-level tokens: wait for the rest
            return None
        m = self._complete.match(text)
        if m is None or m.end() == len(text):  # the last word may still grow
            return None
        return m.group(0)
