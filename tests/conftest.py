"""Fixtures shared across the test files (pytest finds them here; no test file imports them),
and what every test run shares: nothing is written into the checkout.

Helpers that are plain functions (model builders, CLI runners, assertions) stay in the modules
named for what they build: ``runtime_models``, ``server_fixtures``, ``store_checks``,
``kernel_parity``.
"""
from __future__ import annotations

import atexit
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis.configuration import set_hypothesis_home_dir

from runtime_models import build_model

# Hypothesis keeps its example database and a constants cache in ./.hypothesis by default: tests
# must not write into the checkout, so it gets a throw-away folder and no database.
_HYPOTHESIS_HOME = tempfile.mkdtemp(prefix="lacy-hypothesis-")
atexit.register(shutil.rmtree, _HYPOTHESIS_HOME, ignore_errors=True)
set_hypothesis_home_dir(_HYPOTHESIS_HOME)
settings.register_profile("lacy", database=None)
settings.load_profile("lacy")


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    """A tiny llama folder with <CALL>/evidence ids in config.json."""
    return build_model(tmp_path_factory.mktemp("tiny-slm"), seed=0)


@pytest.fixture(scope="session")
def tiny(tiny_dir):
    """``(model, tokenizer)`` of :func:`tiny_dir`, loaded with ``mlx_lm.load``."""
    import mlx_lm

    return mlx_lm.load(str(tiny_dir))


@pytest.fixture(scope="session")
def helper_dir(tmp_path_factory) -> Path:
    """A second tiny model (another seed, 3 layers) to act as the bigger model delegate."""
    return build_model(tmp_path_factory.mktemp("tiny-helper"), seed=1, layers=3, lacy_section=False)


@pytest.fixture
def store_path(tmp_path) -> Path:
    """A store holding one document that every bad call must leave intact."""
    from lacy_mlx.embed import HashedEmbedder
    from lacy_mlx.store import Store
    from store_checks import DIM

    path = tmp_path / "kb.db"
    with Store.open(path, embedder=HashedEmbedder(dim=DIM)) as s:
        s.add_documents([{"id": "keep", "text": "This document must survive every bad call."}])
    return path


@pytest.fixture()
def plain_server(tiny_dir) -> Iterator:
    """The tiny model on a loopback server, gate on (it never calls: p(<CALL>) is low), no store."""
    import lacy_mlx
    from server_fixtures import running

    with running(lacy_mlx.load(str(tiny_dir))) as server:
        yield server


@pytest.fixture(scope="class")
def gate(request):
    """The fused gate of a :class:`kernel_parity.ParitySuite` class (its ``make_gate``), built once per class."""
    return request.cls.make_gate()
