"""The embedder interface the store and the runtime talk to."""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from lacy_mlx.errors import InputError

# The name prefix of the MLX document encoder (``mlx-encoder:<model>``): the encoder names itself
# with it and the registry rebuilds it from a store's recorded name.
MLX_ENCODER_PREFIX = "mlx-encoder"


class Embedder(ABC):
    """Maps texts to unit-length float32 vectors.

    Subclasses implement :meth:`embed_batch` only and set ``name`` (stable across releases: a
    store records it and refuses vectors from another embedder) and ``dim``.
    """

    name: str
    dim: int

    @abstractmethod
    def embed_batch(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts``; return a float32 array of shape ``(len(texts), dim)``, rows L2-normalised."""

    def embed(self, text: str) -> np.ndarray:
        """Embed one text; a float32 vector of shape ``(dim,)``."""
        return self.embed_batch([text])[0]

    def embed_iter(self, texts: Iterable[str], batch_size: int = 64) -> Iterator[np.ndarray]:
        """Embed a stream of texts in batches; yields one ``(<=batch_size, dim)`` array per batch."""
        batch: list[str] = []
        for text in texts:
            batch.append(text)
            if len(batch) == batch_size:
                yield self.embed_batch(batch)
                batch = []
        if batch:
            yield self.embed_batch(batch)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dim={self.dim})"


def check_embeddings(vectors: object, dim: int, *, what: str = "vector") -> np.ndarray:
    """Validate and normalise vectors for storage or search.

    Accepts one vector ``(dim,)`` or a matrix ``(n, dim)``; returns float32 ``(n, dim)`` with unit
    rows. Raises :class:`InputError` for a wrong dimension, NaN or inf entries, or a zero vector.
    """
    try:
        arr = np.asarray(vectors, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{what} is not an array of numbers ({exc}): give a float array of shape (n, {dim})") from exc
    if arr.ndim == 0:
        raise InputError(f"{what} is a single value ({vectors!r}), not a vector: give {dim} numbers")
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise InputError(
            f"{what} has shape {tuple(np.shape(vectors))} but this store holds {dim}-dimensional "
            f"vectors: embed with the store's embedder or create a new store for this dimension"
        )
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{what} contains NaN or inf: check the embedder's output before storing it")
    # Scale by the largest entry first: the norm of a vector of huge finite entries overflows to inf.
    peak = np.max(np.abs(arr), axis=1, keepdims=True) if arr.size else np.zeros((len(arr), 1))
    if np.any(peak == 0):
        raise InputError(f"{what} is all zeros and has no direction: it cannot be searched by cosine")
    arr = arr / peak
    return (arr / np.linalg.norm(arr, axis=1, keepdims=True)).astype(np.float32)
