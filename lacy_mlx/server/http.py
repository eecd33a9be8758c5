"""The HTTP side: routing, the safety checks, JSON and SSE responses (standard library only).

Each connection gets a thread (``ThreadingHTTPServer``) that parses and checks its request,
hands the model work to the :class:`~lacy_mlx.server.worker.ModelWorker`, and waits for the
job's events, checking every ``poll_s`` that its client is still connected (a closed socket
reads as EOF): a client that went away has its job withdrawn, which stops the generation.
"""
from __future__ import annotations

import hmac
import json
import queue
import select
import socket
import sys
import time
import traceback
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Literal, Protocol
from urllib.parse import urlsplit

from lacy_mlx.errors import InputError
from lacy_mlx.server.collect import Collector
from lacy_mlx.server.requests import JSON, ApiError, model_name, parse_embeddings, parse_generation
from lacy_mlx.server.responses import Ids, chunk, completion, model_card, models, usage_chunk
from lacy_mlx.server.worker import Finished, Job, QueueFull, Started, WorkerClosed, generation_work

if TYPE_CHECKING:
    import numpy as np

    from lacy_mlx.runtime.lacy import Lacy
    from lacy_mlx.server.config import ServerConfig
    from lacy_mlx.server.worker import ModelWorker

_ROUTES = {
    "/health": "GET", "/v1/models": "GET", "/v1/chat/completions": "POST", "/v1/completions": "POST",
    "/v1/embeddings": "POST",
}


class _ClientGone(Exception):
    """The client closed its connection."""


class App(Protocol):
    """What the handler asks of the server object (:class:`lacy_mlx.server.app.LacyServer`)."""

    lacy: Lacy
    config: ServerConfig
    model_id: str
    verbose: bool
    created: int
    worker: ModelWorker

    def model_ids(self) -> list[str]: ...

    def gate_json(self) -> JSON: ...

    def embed(self, texts: Sequence[str]) -> tuple[np.ndarray, int]: ...

    def embeddings_body(self, result: tuple[np.ndarray, int], encoding: str) -> JSON: ...


class HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    app: App


class Handler(BaseHTTPRequestHandler):
    """One connection; requests on it are handled in turn (HTTP/1.1 keep-alive, SSE closes)."""

    protocol_version = "HTTP/1.1"
    server_version = "lacy-mlx"
    timeout = 60  # seconds a client may take to send its request (slow clients hold a thread)
    server: HTTPServer

    # ---- entry points ----------------------------------------------------------------------

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_OPTIONS(self) -> None:
        self._dispatch("OPTIONS")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002  (the base class's name)
        if self.server.app.verbose:
            sys.stderr.write(f"lacy-mlx serve: {self.address_string()} {format % args}\n")

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The base class's own errors (bad request line, oversized headers), as JSON."""
        self.close_connection = True
        self._origin = None
        self._send_json(code, ApiError(code, message or explain or "bad request").body())

    # ---- dispatch and checks ---------------------------------------------------------------

    def _dispatch(self, method: str) -> None:
        self._origin: str | None = None
        self._sse = False
        try:
            self._check_host_and_origin()
            path = urlsplit(self.path).path.rstrip("/") or "/"
            if method == "OPTIONS":
                return self._preflight()
            if path != "/health":
                self._check_key()
            self._route(method, path)
        except ApiError as exc:
            self._fail(exc)
        except _ClientGone:
            self.close_connection = True
        except (BrokenPipeError, ConnectionResetError, socket.timeout):
            self.close_connection = True
        except Exception as exc:  # a bug must answer 500, not drop the connection silently
            traceback.print_exc(file=sys.stderr)
            self._fail(ApiError(500, f"internal error: {type(exc).__name__}: {exc}"))

    def _check_host_and_origin(self) -> None:
        cfg = self.server.app.config
        if not cfg.host_allowed(self.headers.get("Host")):
            raise ApiError(403, "this Host is not allowed: the server answers local names only", code="host_not_allowed")
        origin = self.headers.get("Origin")
        if origin is not None:
            if not cfg.origin_allowed(origin):
                raise ApiError(403, f"origin {origin} is not allowed (lacy-mlx serve --cors-origin)",
                               code="origin_not_allowed")
            self._origin = origin

    def _check_key(self) -> None:
        key = self.server.app.config.api_key
        if key is None:
            return
        auth = self.headers.get("Authorization", "")
        given = auth[7:] if auth[:7].lower() == "bearer " else ""
        if not hmac.compare_digest(given.encode("utf-8"), key.encode("utf-8")):
            raise ApiError(401, "invalid API key: send Authorization: Bearer <key>", code="invalid_api_key")

    def _preflight(self) -> None:
        if self._origin is None:
            raise ApiError(400, "a CORS preflight needs an Origin header")
        self.send_response(204)
        self._cors_headers()
        self.send_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
        self.send_header("Access-Control-Allow-Headers",
                         self.headers.get("Access-Control-Request-Headers", "Authorization, Content-Type"))
        self.send_header("Access-Control-Max-Age", "600")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _route(self, method: str, path: str) -> None:
        app = self.server.app
        if path.startswith("/v1/models/") and method == "GET":
            name = path[len("/v1/models/"):]
            if name not in app.model_ids():
                raise ApiError(404, f"model {name!r} is not served here", param="model", code="model_not_found")
            return self._send_json(200, model_card(name, app.created))
        want = _ROUTES.get(path)
        if want is None:
            raise ApiError(404, f"unknown route {path}: see GET /v1/models, POST /v1/chat/completions, "
                           "/v1/completions, /v1/embeddings", code="unknown_url")
        if method != want:
            raise ApiError(405, f"{path} takes {want}, not {method}", code="method_not_allowed")
        if path == "/health":
            return self._send_json(200, {"status": "ok", "model": app.model_id, "queue": app.worker.counts()})
        if path == "/v1/models":
            return self._send_json(200, models(app.model_ids(), app.created))
        body = self._body()
        if path == "/v1/embeddings":
            return self._embeddings(body)
        self._generate(body, "chat" if path == "/v1/chat/completions" else "completion")

    def _body(self) -> JSON:
        cfg = self.server.app.config
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            raise ApiError(411, "send the body with a Content-Length (chunked bodies are not accepted)")
        length = self.headers.get("Content-Length")
        if length is None:
            self.close_connection = True
            raise ApiError(411, "a POST needs a Content-Length header")
        try:
            n = int(length)
        except ValueError:
            self.close_connection = True
            raise ApiError(400, f"bad Content-Length {length!r}") from None
        if n > cfg.max_body_bytes or n < 0:
            self.close_connection = True  # the body stays unread: this connection cannot go on
            raise ApiError(413, f"the body is {n} bytes; this server takes at most {cfg.max_body_bytes} "
                           "(lacy-mlx serve --max-body-bytes)", code="request_too_large")
        raw = self.rfile.read(n)
        if len(raw) < n:
            self.close_connection = True
            raise ApiError(400, "the body ended before Content-Length bytes arrived")
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError(400, f"the body is not valid JSON: {exc}", code="invalid_json") from None
        if not isinstance(body, dict):
            raise ApiError(400, "the body must be a JSON object", code="invalid_json")
        return body

    # ---- model work ------------------------------------------------------------------------

    def _submit(self, job: Job) -> None:
        try:
            self.server.app.worker.submit(job)
        except QueueFull as exc:
            raise ApiError(429, f"the server is busy: {exc}; retry shortly", code="queue_full") from None
        except WorkerClosed as exc:
            raise ApiError(503, str(exc), code="shutting_down") from None

    def _generate(self, body: JSON, kind: Literal["chat", "completion"]) -> None:
        app = self.server.app
        self._check_model(model_name(body), chat=True)
        req = parse_generation(body, kind, default_max_tokens=app.config.default_max_tokens,
                               max_tokens_cap=app.config.max_tokens_cap)
        job = Job(generation_work(app.lacy, req))
        self._submit(job)
        try:
            items = self._items(job)
            self._wait_started(items)
            ids = Ids(kind, app.model_id)
            collector = Collector(req.stop, job.cancel)
            if req.logprobs is not None:
                collector.transcript.logprobs = []
            if req.stream:
                self._stream(items, ids, collector, req.include_usage)
            else:
                self._drain(items, collector)
                self._send_json(200, completion(ids, collector.transcript, app.gate_json()))
        finally:
            app.worker.withdraw(job)  # no-op once finished; stops it when the client went away

    def _embeddings(self, body: JSON) -> None:
        app = self.server.app
        self._check_model(model_name(body), chat=False)
        req = parse_embeddings(body)
        job = Job(lambda j: j.post(app.embed(req.texts)))
        self._submit(job)
        try:
            result = None
            for item in self._items(job):
                if isinstance(item, BaseException):
                    raise _as_api_error(item)
                result = item
            assert result is not None
            self._send_json(200, app.embeddings_body(result, req.encoding))
        finally:
            app.worker.withdraw(job)

    def _check_model(self, name: str, *, chat: bool) -> None:
        app = self.server.app
        if name not in (app.model_ids() if not chat else [app.model_id]):
            raise ApiError(404, f"model {name!r} is not served here (this server runs {app.model_id!r}; it never "
                           "loads a model because a request names it)", param="model", code="model_not_found")

    def _items(self, job: Job) -> Iterator[object]:
        """The job's posted items until :class:`Finished`; watches the client meanwhile."""
        cfg = self.server.app.config
        last_write = time.monotonic()
        while True:
            try:
                item = job.events.get(timeout=cfg.poll_s)
            except queue.Empty:
                if self._client_gone():
                    raise _ClientGone() from None
                if self._sse and time.monotonic() - last_write >= cfg.keepalive_s:
                    self._write(b": keepalive\n\n")
                    last_write = time.monotonic()
                continue
            if isinstance(item, Finished):
                return
            if self._sse:
                last_write = time.monotonic()
            yield item

    def _wait_started(self, items: Iterator[object]) -> None:
        for item in items:
            if isinstance(item, Started):
                return
            if isinstance(item, BaseException):
                raise _as_api_error(item)
        raise ApiError(500, "the generation ended before it started")

    def _drain(self, items: Iterator[object], collector: Collector) -> None:
        for item in items:
            if isinstance(item, BaseException):
                raise _as_api_error(item)
            collector.add(item)  # type: ignore[arg-type]

    def _stream(self, items: Iterator[object], ids: Ids, collector: Collector, include_usage: bool) -> None:
        app = self.server.app
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.send_header("X-Accel-Buffering", "no")
        self._cors_headers()
        self.end_headers()
        self.close_connection = True
        self._sse = True
        self._event(chunk(ids, role=True, include_usage=include_usage) if ids.kind == "chat" else None)
        t_lp = collector.transcript.logprobs is not None
        try:
            for item in items:
                if isinstance(item, BaseException):
                    raise item
                text = collector.add(item)  # type: ignore[arg-type]
                if text:
                    lps = collector.take_logprobs() if t_lp else None
                    self._event(chunk(ids, text, include_usage=include_usage, logprobs=lps))
        except (_ClientGone, BrokenPipeError, ConnectionResetError):
            raise
        except Exception as exc:  # headers are out: an error event, then close (no [DONE])
            self._event(_as_api_error(exc).body())
            return
        t = collector.transcript
        extra: JSON = {"lacy": t.lacy(app.gate_json())}
        if ids.kind == "chat":
            extra["annotations"] = t.annotations()
        self._event(chunk(ids, finish=t.finish, include_usage=include_usage, extra=extra,
                          logprobs=collector.take_logprobs() if t_lp else None))
        if include_usage:
            self._event(usage_chunk(ids, t))
        self._write(b"data: [DONE]\n\n")

    # ---- writing ---------------------------------------------------------------------------

    def _event(self, obj: JSON | None) -> None:
        if obj is not None:
            self._write(b"data: " + json.dumps(obj, ensure_ascii=False).encode("utf-8") + b"\n\n")

    def _write(self, data: bytes) -> None:
        self.wfile.write(data)
        self.wfile.flush()

    def _client_gone(self) -> bool:
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    def _cors_headers(self) -> None:
        if self._origin is not None:
            self.send_header("Access-Control-Allow-Origin", self._origin)
            self.send_header("Vary", "Origin")

    def _send_json(self, status: int, obj: JSON, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(obj, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self._cors_headers()
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def _fail(self, exc: ApiError) -> None:
        if self._sse:  # too late for a status: the stream carries the error
            self._event(exc.body())
            return
        headers = {"Retry-After": "1"} if exc.status == 429 else None
        try:
            self._send_json(exc.status, exc.body(), headers)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


def _as_api_error(exc: BaseException) -> ApiError:
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, InputError):
        return ApiError(400, str(exc))
    if isinstance(exc, WorkerClosed):
        return ApiError(503, str(exc), code="shutting_down")
    return ApiError(500, f"generation failed: {type(exc).__name__}: {exc}", code="generation_failed")

