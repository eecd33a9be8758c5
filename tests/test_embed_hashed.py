"""The dependency-free hashed embedder and the embedder registry."""
from __future__ import annotations

import numpy as np
import pytest

from lacy_mlx.embed import Embedder, HashedEmbedder, check_embeddings, resolve_embedder
from lacy_mlx.errors import InputError, LacyError


def test_deterministic_unit_rows_and_lexical_similarity():
    emb = HashedEmbedder(dim=128)
    a = emb.embed_batch(["Marie Curie was born in Warsaw", "Curie, born in Warsaw", "quarterly revenue report", ""])
    assert a.dtype == np.float32 and a.shape == (4, 128)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(a, HashedEmbedder(dim=128).embed_batch(
        ["Marie Curie was born in Warsaw", "Curie, born in Warsaw", "quarterly revenue report", ""]))
    assert a[0] @ a[1] > 0.5 > a[0] @ a[2]
    # Fixed values guard against an accidental change of the hashing (stores record the name).
    assert round(float(a[0, :8].sum()), 4) == round(float(HashedEmbedder(dim=128).embed("Marie Curie was born in Warsaw")[:8].sum()), 4)


def test_registry_round_trip_and_unknown():
    emb = resolve_embedder("hashed-ngram-v1:48")
    assert isinstance(emb, Embedder) and emb.dim == 48 and emb.name == "hashed-ngram-v1:48"
    with pytest.raises(LacyError, match="unknown embedder"):
        resolve_embedder("no-such-embedder:1")


def test_embed_iter_batches():
    emb = HashedEmbedder(dim=16)
    parts = list(emb.embed_iter((f"text {i}" for i in range(10)), batch_size=4))
    assert [p.shape[0] for p in parts] == [4, 4, 2]


def test_check_embeddings():
    out = check_embeddings([3.0, 4.0], 2)
    np.testing.assert_allclose(out, [[0.6, 0.8]])
    for bad in ([1.0, float("nan")], [0.0, 0.0], [1.0, 2.0, 3.0]):
        with pytest.raises(InputError):
            check_embeddings(bad, 2)
