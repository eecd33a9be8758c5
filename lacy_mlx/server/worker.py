"""One model, one thread, a bounded queue: every MLX call of the server runs on the worker thread.

Request threads build a :class:`Job` and :meth:`ModelWorker.submit` it; a full queue raises
:class:`QueueFull` at once (the request gets a 429). The worker runs jobs in arrival order and
the job posts what it produces to its own ``events`` queue, which the request thread drains.
A job cancelled while waiting leaves the queue immediately (its slot is free); one cancelled
while running stops its generation before the next decode step.
"""
from __future__ import annotations

import copy
import queue
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from lacy_mlx.runtime.delegates import RetrievalDelegate
from lacy_mlx.runtime.events import Token
from lacy_mlx.runtime.lacy import Lacy
from lacy_mlx.runtime.stream import Stream
from lacy_mlx.server.requests import GenerationRequest


class QueueFull(Exception):
    """The worker's queue holds ``queue_size`` waiting jobs already."""


class WorkerClosed(Exception):
    """The server is shutting down."""


@dataclass(frozen=True)
class Started:
    """Posted once the job's arguments were accepted and generation begins."""


@dataclass(frozen=True)
class Scored:
    """A token with its log-probability entry in OpenAI's chat shape (pieces decoded here, on the
    worker thread, which owns the tokenizer)."""

    token: Token
    entry: dict[str, object]


@dataclass(frozen=True)
class Finished:
    """Posted last, after the job's output (or its error)."""


class Job:
    """A unit of work for the worker; ``work(job)`` posts items with :meth:`post`."""

    def __init__(self, work: Callable[["Job"], None]) -> None:
        self.work = work
        self.events: queue.Queue[object] = queue.Queue()
        self._cancel = threading.Event()
        self._stream: Stream | None = None
        self._lock = threading.Lock()

    def post(self, item: object) -> None:
        self.events.put(item)

    def attach(self, stream: Stream) -> None:
        """The running generation, so that :meth:`cancel` reaches it."""
        with self._lock:
            self._stream = stream
            if self._cancel.is_set():
                stream.cancel()

    def cancel(self) -> None:
        """Stop the job (thread-safe): skipped if waiting, its generation stopped if running."""
        with self._lock:
            self._cancel.set()
            if self._stream is not None:
                self._stream.cancel()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()


class ModelWorker:
    """Runs jobs one at a time on a daemon thread; at most ``queue_size`` wait behind the running one."""

    def __init__(self, queue_size: int) -> None:
        self.queue_size = queue_size
        self._waiting: deque[Job] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self.running: Job | None = None
        self._thread = threading.Thread(target=self._loop, name="lacy-model-worker", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> None:
        with self._cond:
            if self._closed:
                raise WorkerClosed("the server is shutting down")
            if len(self._waiting) >= self.queue_size:
                raise QueueFull(f"{len(self._waiting)} requests are waiting already (queue size {self.queue_size})")
            self._waiting.append(job)
            self._cond.notify()

    def withdraw(self, job: Job) -> None:
        """Cancel ``job`` and, if it still waits, free its slot now."""
        job.cancel()
        with self._cond:
            if job in self._waiting:
                self._waiting.remove(job)

    def counts(self) -> dict[str, int]:
        with self._cond:
            return {"running": int(self.running is not None), "waiting": len(self._waiting), "size": self.queue_size}

    def close(self) -> None:
        with self._cond:
            self._closed = True
            for job in self._waiting:
                job.cancel()
                job.post(WorkerClosed("the server is shutting down"))
                job.post(Finished())
            self._waiting.clear()
            running = self.running
            self._cond.notify_all()
        if running is not None:
            running.cancel()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._waiting and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                job = self._waiting.popleft()
                self.running = job
            try:
                if not job.cancelled:
                    job.work(job)
            except BaseException as exc:  # reported to the request thread; the worker lives on
                job.post(exc)
            finally:
                job.post(Finished())
                with self._cond:
                    self.running = None


def generation_work(lacy: Lacy, req: GenerationRequest) -> Callable[[Job], None]:
    """The job that runs ``req`` on ``lacy``: posts :class:`Started`, then every event."""

    def work(job: Job) -> None:
        stream = _start(lacy, req)  # bad input raises here, before Started: the client gets a 400
        job.attach(stream)
        job.post(Started())
        piece = lacy.tokenizer.decode
        with stream:
            for ev in stream:
                if req.logprobs is not None and isinstance(ev, Token):
                    job.post(Scored(ev, _entry(piece, ev)))
                else:
                    job.post(ev)

    return work


def _entry(piece: Callable[[list[int]], str], tok: Token) -> dict[str, object]:
    """OpenAI's ``{token, logprob, bytes, top_logprobs}``; a delegate's token gets logprob 0."""

    def one(token_id: int, lp: float) -> dict[str, object]:
        text = piece([token_id])
        return {"token": text, "logprob": lp, "bytes": list(text.encode("utf-8"))}

    entry = one(tok.id, tok.logprob if tok.logprob is not None else 0.0)
    entry["top_logprobs"] = [one(i, v) for i, v in tok.top_logprobs]
    return entry


def _start(lacy: Lacy, req: GenerationRequest) -> Stream:
    """``lacy.stream`` with this request's delegate: retrieval off (and then the gate off, unless the
    request set it), or another ``k``."""
    saved = lacy.delegate
    delegate = saved
    changes = dict(req.lacy.gate_changes)
    if not req.lacy.retrieval and isinstance(saved, RetrievalDelegate):
        delegate = None
        changes.setdefault("mode", "off")  # nothing would answer a call: plain decoding
    elif req.lacy.k is not None and isinstance(saved, RetrievalDelegate):
        delegate = copy.copy(saved)
        delegate.k = req.lacy.k
    lacy.delegate = delegate  # read once by stream(): the worker thread is the only user
    try:
        return lacy.stream(req.prompt, max_tokens=req.max_tokens, sampling=req.sampling, logprobs=req.logprobs,
                           **changes)
    finally:
        lacy.delegate = saved
