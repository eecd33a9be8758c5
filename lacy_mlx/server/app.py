"""The server object: one :class:`~lacy_mlx.Lacy`, its worker, the HTTP listener."""
from __future__ import annotations

import base64
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import numpy as np

from lacy_mlx.embed import Embedder
from lacy_mlx.runtime.lacy import Lacy
from lacy_mlx.server.config import ServerConfig
from lacy_mlx.server.http import Handler, HTTPServer
from lacy_mlx.server.requests import JSON
from lacy_mlx.server.worker import ModelWorker


class LacyServer:
    """Serve ``lacy`` over the OpenAI API on ``config.host:config.port``.

    ``embedder``: what ``/v1/embeddings`` uses (default: the store's document encoder, else the
    default embedder, built on first use on the worker thread). The server turns on
    ``lacy.reuse_prompt_cache`` (a conversation's next request prefills only its new turns) and
    owns ``lacy`` from then on: use it only through the server. ``verbose``: log each request.
    """

    def __init__(self, lacy: Lacy, config: ServerConfig | None = None, *, embedder: Embedder | None = None,
                 verbose: bool = False) -> None:
        self.lacy = lacy
        self.config = config or ServerConfig()
        self.model_id = self.config.model_id or lacy.name
        self.verbose = verbose
        self.created = int(time.time())
        self._embedder = embedder
        lacy.reuse_prompt_cache = True
        self.worker = ModelWorker(self.config.queue_size)
        self.httpd = HTTPServer((self.config.host, self.config.port), Handler)
        self.httpd.app = self
        self._thread: threading.Thread | None = None
        self._serving = False

    @property
    def url(self) -> str:
        """``http://host:port/v1``: the ``base_url`` for OpenAI clients."""
        host, port = self.httpd.server_address[:2]
        host = f"[{host}]" if ":" in str(host) else host
        return f"http://{host}:{port}/v1"

    def serve_forever(self) -> None:
        """Answer requests until :meth:`close` (or KeyboardInterrupt in the caller)."""
        self._serving = True
        try:
            self.httpd.serve_forever(poll_interval=0.2)
        finally:
            self._serving = False

    def start(self) -> LacyServer:
        """Serve on a background thread (tests, apps embedding the server); returns self."""
        self._thread = threading.Thread(target=self.serve_forever, name="lacy-http", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop listening, stop the running generation, answer waiting requests with 503."""
        if self._serving:  # shutdown() waits for serve_forever to return: only call it while serving
            self.httpd.shutdown()
        self.worker.close()
        self.httpd.server_close()

    def __enter__(self) -> LacyServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- what the handler asks for ---------------------------------------------------------

    def model_ids(self) -> list[str]:
        """The chat model, then the embedding model (when it is known without building it)."""
        ids = [self.model_id]
        name = self._embedder_name()
        if name and name not in ids:
            ids.append(name)
        return ids

    def gate_json(self) -> JSON:
        return {k: v for k, v in asdict(self.lacy.gate).items() if v is not None}

    def embed(self, texts: Sequence[str]) -> tuple[np.ndarray, int]:
        """Vectors and a token count for ``texts`` (runs on the worker thread)."""
        emb = self.embedder()
        vecs = emb.embed_batch(list(texts))
        tokenize = getattr(emb, "tokenize", None)
        tokens = sum(len(ids) for ids in tokenize(list(texts))) if tokenize else sum(len(t.split()) for t in texts)
        return vecs, tokens

    def embeddings_body(self, result: tuple[np.ndarray, int], encoding: str) -> JSON:
        vecs, tokens = result
        data = []
        for i, v in enumerate(np.asarray(vecs, dtype=np.float32)):
            emb: object = base64.b64encode(v.astype("<f4").tobytes()).decode("ascii") if encoding == "base64" \
                else [float(x) for x in v]
            data.append({"object": "embedding", "index": i, "embedding": emb})
        return {"object": "list", "data": data, "model": self.embedder().name,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}

    def embedder(self) -> Embedder:
        if self._embedder is None:
            store = self._store()
            if store is not None:
                self._embedder = store.embedder
            else:
                from lacy_mlx.embed import default_embedder

                self._embedder = default_embedder()
        return self._embedder

    def _embedder_name(self) -> str | None:
        if self._embedder is not None:
            return self._embedder.name
        store = self._store()
        return store.embedder_name if store is not None else None

    def _store(self) -> Any:
        """The store the model retrieves from (its retrieval delegate's), or None."""
        return getattr(self.lacy.delegate, "store", None)


def serve(lacy: Lacy, config: ServerConfig | None = None, *, embedder: Embedder | None = None,
          verbose: bool = True) -> None:
    """Serve ``lacy`` until interrupted (what ``lacy-mlx serve`` runs)."""
    server = LacyServer(lacy, config, embedder=embedder, verbose=verbose)
    print(f"lacy-mlx serve: model {server.model_id!r} at {server.url} (queue {server.config.queue_size}, "
          f"key {'required' if server.config.api_key else 'off'})", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
