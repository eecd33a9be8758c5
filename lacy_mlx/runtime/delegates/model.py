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
from lacy_mlx.runtime.prompt_cache import PromptCache

# A word: a maximal run of letters/digits (with ' or -), or one other visible symbol.
_SPAN = r"\s*(?:[\w'’\-]+(?![\w'’\-])|[^\w\s])"


class ModelDelegate:
    """Continue the text with ``model`` (an mlx-lm model) for one word or fact span.

    ``max_words``: words in the span (a word is a run of letters/digits, or one punctuation mark).
    ``max_tokens``: hard cap on the tokens generated per call. ``reused_tokens`` and
    ``prefilled_tokens`` count, over the delegate's life, cache hits and tokens processed.
    """

    kind = "model"
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
        detok = self.tokenizer.detokenizer
        generated: list[int] = []
        span = None
        for token, _ in generate_step(
            mx.array(remaining), self.model, max_tokens=self.max_tokens, prompt_cache=self.cache
        ):
            if token in self.tokenizer.eos_token_ids:
                break
            generated.append(token)
            detok.add_token(token)
            span = self._span(detok.text)
            if span is not None:
                break
        detok.finalize()
        # generate_step computes one token ahead: keep the cache exactly at ids + generated.
        self.prompt_cache.commit(ids + generated)
        text = span if span is not None else detok.text
        return Help(kind="continuation", text=text, sources=(self.name,), query=ctx.full_text[-80:])

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
        m = self._complete.match(text)
        if m is None or m.end() == len(text):  # the last word may still grow
            return None
        return m.group(0)
