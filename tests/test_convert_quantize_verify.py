"""Quantized conversions load and generate with mlx-lm; --verify reports parity and fails loudly."""
from __future__ import annotations

import json

import numpy as np
import pytest

from convert_models import checkpoint, mlx_logits, torch_logits
from lacy_mlx.cli import main
from lacy_mlx.convert import VerificationError, convert

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")


@pytest.mark.parametrize("family,bits,tol", [("llama", 8, 0.05), ("llama", 4, 0.5), ("gpt2", 8, 0.05),
                                             ("gemma3_text", 4, 0.5)])
def test_quantized_loads_and_generates(family, bits, tol, tmp_path):
    import mlx.nn as nn
    from mlx_lm import generate, load

    st, _, model = checkpoint(family)
    result = convert(st, tmp_path / "q", quantize=bits, group_size=32, add_call_token=True)
    assert result.quantization == {"group_size": 32, "bits": bits, "mode": "affine"}
    cfg = json.loads((tmp_path / "q" / "config.json").read_text())
    assert cfg["quantization"] == result.quantization and cfg["lacy"]["call_token_id"] == 64
    mlx_model, tokenizer = load(str(tmp_path / "q"))
    assert any(isinstance(m, nn.QuantizedLinear) for _, m in mlx_model.named_modules())
    text = generate(mlx_model, tokenizer, prompt=[1, 5, 9], max_tokens=4, verbose=False)
    assert isinstance(text, str)
    diff = np.abs(mlx_logits(mlx_model)[..., :64] - torch_logits(model)).max()
    assert diff < tol


def test_quantized_encoder_loads(tmp_path):
    import mlx.core as mx

    from lacy_mlx.encoder.loader import load_encoder

    st, _, model = checkpoint("bert")
    convert(st, tmp_path / "q", quantize=8, group_size=32)
    loaded = load_encoder(tmp_path / "q")
    ids = [[1, 5, 9, 14, 22, 2]]
    with torch.no_grad():
        ref = model(input_ids=torch.tensor(ids)).last_hidden_state[0].mean(0).numpy()
    got = np.array(loaded.model(mx.array(ids))[0].mean(0))
    assert np.dot(ref, got) / (np.linalg.norm(ref) * np.linalg.norm(got)) > 0.999


@pytest.mark.parametrize("family,fmt", [("gemma3_text", "st"), ("bert", "bin")])
def test_verify_passes(family, fmt, tmp_path):
    st, pt, _ = checkpoint(family)
    result = convert(st if fmt == "st" else pt, tmp_path / "out", verify=True)
    report = result.verify
    assert report is not None and report.passed
    if family == "bert":
        assert report.metric == "cosine" and report.value > 0.9999
    else:
        assert report.metric == "max_abs_logit_diff" and report.value < 1e-4


def test_verify_raw_state_dict_with_call_tokens(tmp_path):
    st, _, model = checkpoint("phi3")
    src = tmp_path / "raw"
    src.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (src / name).write_bytes((st / name).read_bytes())
    torch.save(model.state_dict(), src / "weights.pt")
    result = convert(src, tmp_path / "out", verify=True, add_call_token=True, dtype="float16")
    assert result.verify.passed and result.verify.value < 0.05


def test_verify_failure_leaves_nothing_and_cli_exits_1(tmp_path, capsys):
    st, _, _ = checkpoint("qwen2")
    with pytest.raises(VerificationError, match="max_abs_logit_diff"):
        convert(st, tmp_path / "out", verify=True, verify_tolerance=-1.0)
    assert list(tmp_path.iterdir()) == []
    assert main(["convert", str(st), "--out", str(tmp_path / "out"), "--verify"]) == 0
    assert "verify: max_abs_logit_diff" in capsys.readouterr().out
