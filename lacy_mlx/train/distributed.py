"""Data-parallel training with ``mx.distributed``: each process trains on its shard of every batch.

Start it with MLX's launcher, e.g. two local processes over the ring backend::

    mlx.launch -n 2 --backend ring -- lacy-mlx train --preset demo --out runs/demo

(across machines: ``mlx.launch --hostfile hosts.json --backend ring ...``). Every process builds
the same corpus and model (same seeds); process r takes rows ``r::world`` of each global batch,
gradients are summed with ``all_sum`` and divided by the process count before the update, so the
update equals single-process training on the whole batch except that LaCy's top-q selection
runs per shard. Only rank 0 writes logs, checkpoints and the exported folder.
"""
from __future__ import annotations

import mlx.core as mx
from mlx.utils import tree_map


def init() -> mx.distributed.Group | None:
    """The world group when launched with more than one process, else None."""
    if not mx.distributed.is_available():
        return None
    group = mx.distributed.init()
    return group if group.size() > 1 else None


def world_size() -> int:
    group = init()
    return group.size() if group is not None else 1


def average_gradients(grads):
    """Mean of each gradient over all processes (sum then divide by the process count)."""
    n = world_size()
    return tree_map(lambda g: mx.distributed.all_sum(g) / n, grads)


def all_sum(x: mx.array) -> mx.array:
    """Sum over processes (identity in a single process); runs on the CPU stream as mlx-lm does."""
    if world_size() == 1:
        return x
    return mx.distributed.all_sum(x, stream=mx.cpu)
