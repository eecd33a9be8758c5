"""The top-level names type checkers and users see, and load()'s one way to configure retrieval."""
from __future__ import annotations

import pytest

import lacy_mlx
from lacy_mlx.embed import HashedEmbedder
from lacy_mlx.errors import InputError
from lacy_mlx.store import Store


def test_every_listed_name_resolves():
    for name in lacy_mlx.__all__:
        assert getattr(lacy_mlx, name) is not None, name
    assert set(lacy_mlx.__all__) <= set(dir(lacy_mlx))
    # the conversion package is also its function
    assert callable(lacy_mlx.convert) and callable(lacy_mlx.convert.convert)
    with pytest.raises(AttributeError, match="no attribute"):
        getattr(lacy_mlx, "no_such_name")


def test_retrieval_is_a_delegate_and_db_its_short_form(tiny, tmp_path):
    store = Store.open(tmp_path / "kb.db", embedder=HashedEmbedder(dim=32))
    short = lacy_mlx.load(tiny, db=store)
    assert isinstance(short.delegate, lacy_mlx.RetrievalDelegate) and short.delegate.store is store
    assert short.delegate.k == 3 and short.delegate.query_kind == "text"  # the model states no retrieval section
    chosen = lacy_mlx.load(tiny, delegate=lacy_mlx.RetrievalDelegate(store, k=5))
    assert chosen.delegate.k == 5
    with pytest.raises(InputError, match="not both"):
        lacy_mlx.load(tiny, db=store, delegate=lacy_mlx.RetrievalDelegate(store))
