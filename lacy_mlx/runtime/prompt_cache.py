"""A KV cache kept between generations, with the token ids it holds: the common prefix is reused.

One primitive for every "continue where the last call left off" case: the SLM across the
requests of a conversation (:class:`lacy_mlx.Lacy` with ``reuse_prompt_cache``) and a model
delegate across calls. :meth:`PromptCache.reuse` trims the cache back to the longest common
prefix of what it holds and the new ids (mlx-lm's ``trim_prompt_cache``) and says how many ids
need no prefill; at least the last id is always fed again, since its logits are needed.
"""
from __future__ import annotations

from collections.abc import Sequence

import mlx.nn as nn
from mlx_lm.models.cache import can_trim_prompt_cache, make_prompt_cache, trim_prompt_cache
from mlx_lm.utils import common_prefix_len


class PromptCache:
    """mlx-lm's per-layer cache list for ``model`` and the ids ``ids`` it holds (in order)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.cache: list = make_prompt_cache(model)
        self.ids: list[int] = []

    @property
    def offset(self) -> int:
        """Tokens the cache holds (can exceed ``len(ids)`` until :meth:`commit` trims it)."""
        return int(getattr(self.cache[0], "offset", 0)) if self.cache else 0

    def reuse(self, ids: Sequence[int]) -> int:
        """Trim the cache to its common prefix with ``ids`` (at most ``len(ids) - 1``); that length.

        A cache that cannot be trimmed (rotating, recurrent) starts over and reuses nothing.
        """
        common = min(common_prefix_len(self.ids, list(ids)), len(ids) - 1)
        common = max(common, 0)
        if common < self.offset:
            if can_trim_prompt_cache(self.cache):
                trim_prompt_cache(self.cache, self.offset - common)
            else:
                self.clear()
                common = 0
        self.ids = list(ids[:common])
        return common

    def commit(self, ids: Sequence[int]) -> None:
        """Record that the cache holds ``ids``: anything computed past them is trimmed; when it
        holds fewer, only that many of ``ids`` are recorded."""
        extra = self.offset - len(ids)
        if extra > 0:
            trim_prompt_cache(self.cache, extra)
        self.ids = list(ids[: self.offset])

    def clear(self) -> None:
        """Drop everything: a fresh, empty cache."""
        self.cache = make_prompt_cache(self.model)
        self.ids = []
