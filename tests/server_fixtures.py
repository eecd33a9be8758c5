"""Servers on loopback around tiny models, for the server tests (the ``plain_server`` fixture is in conftest.py)."""
from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlx_lm
from runtime_models import boost_call, vocab_of

import lacy_mlx
from lacy_mlx.embed import HashedEmbedder
from lacy_mlx.runtime import CallbackDelegate, GateConfig, RetrievalDelegate
from lacy_mlx.server import LacyServer, ServerConfig
from lacy_mlx.server.worker import Job
from lacy_mlx.store import Store
from lacy_mlx.tokens import CALL_TOKEN

DOCS = [
    {"id": "file:///docs/curie.md", "title": "Marie Curie", "text": "Marie Curie was born in Warsaw in 1867."},
    {"id": "turing", "title": "Alan Turing", "text": "Alan Turing was born in London in 1912."},
]


@contextmanager
def running(lacy, **config) -> Iterator[LacyServer]:
    """A started server on a free loopback port; closed at the end."""
    config.setdefault("port", 0)
    server = LacyServer(lacy, ServerConfig(**config), verbose=False).start()
    try:
        yield server
    finally:
        server.close()


def calling_lacy(tiny_dir: Path, tmp_path: Path, **load_kw):
    """The tiny model with <CALL> boosted (it calls whenever the gate is open) over a hashed store."""
    model, tok = mlx_lm.load(str(tiny_dir))
    boost_call(model, vocab_of(tiny_dir)[CALL_TOKEN])
    store = Store.open(tmp_path / "kb.db", embedder=HashedEmbedder(dim=64))
    store.add_documents(DOCS)
    lacy = lacy_mlx.load((model, tok), delegate=RetrievalDelegate(store, k=2), gate=GateConfig(mode="call", per_sentence=1),
                         **load_kw)
    lacy.name = "tiny-calls"
    return lacy


def blocking_delegate(lacy, release: threading.Event, calls: list) -> None:
    """Make ``lacy`` call ``fn`` at each call: it records the call and waits for ``release``."""

    def fn(ctx):
        calls.append(ctx.step)
        release.wait(10)
        return "Marie Curie was born in Warsaw."

    lacy.delegate = CallbackDelegate(fn, timeout_s=15, name="slow")


def occupy(server: LacyServer, release: threading.Event, waiting: int = 0) -> None:
    """Keep the worker busy until ``release`` is set; ``waiting`` more jobs fill the queue."""
    started = threading.Event()

    def hold(job):
        started.set()
        release.wait(10)

    server.worker.submit(Job(hold))
    assert started.wait(10)
    for _ in range(waiting):
        server.worker.submit(Job(lambda job: release.wait(10)))
