"""A deterministic, dependency-free embedder: signed feature hashing of words and character n-grams.

It needs no model, gives the same vectors on every machine and Python version (crc32, not
``hash()``), and captures enough lexical overlap for tests and for stores built without a model.
"""
from __future__ import annotations

import re
import zlib
from collections import Counter
from collections.abc import Sequence

import numpy as np

from lacy_mlx.embed.base import Embedder

_WORD = re.compile(r"\w+", re.UNICODE)


class HashedEmbedder(Embedder):
    """Hash words (weight 1) and character ``ngram``-grams of each word (weight 0.5) into ``dim`` buckets.

    Counts are damped with ``1 + log(count)``; each feature's sign comes from a second hash bit so
    collisions cancel on average. Empty or symbol-only text maps to a fixed unit vector.
    """

    def __init__(self, dim: int = 384, ngram: int = 3) -> None:
        if dim < 8:
            raise ValueError(f"dim must be at least 8, got {dim}")
        self.dim = int(dim)
        self.ngram = int(ngram)
        self.name = f"hashed-ngram-v1:{self.dim}"

    def _features(self, text: str) -> Counter[str]:
        feats: Counter[str] = Counter()
        for word in _WORD.findall(text.lower()):
            feats["w:" + word] += 2  # words count double against their n-grams
            padded = f"<{word}>"
            for i in range(max(1, len(padded) - self.ngram + 1)):
                feats["c:" + padded[i : i + self.ngram]] += 1
        return feats

    def embed_batch(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for feat, count in self._features(text).items():
                h = zlib.crc32(feat.encode("utf-8"))
                sign = 1.0 if (h >> 31) & 1 else -1.0
                out[row, h % self.dim] += sign * (1.0 + np.log(count))
            norm = float(np.linalg.norm(out[row]))
            if norm == 0.0:
                out[row, 0] = 1.0  # no features: a fixed direction keeps the contract (unit rows)
            else:
                out[row] /= norm
        return out
