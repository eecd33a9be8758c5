"""Decoder families (any mlx-lm architecture) convert from safetensors and pytorch_model.bin with
float32 parity, and take <CALL> rows without moving old tokens' logits."""
from __future__ import annotations

import json

import numpy as np
import pytest

from convert_models import DECODERS, PROBE, VOCAB, checkpoint, mlx_logits, torch_logits
from lacy_mlx.convert import convert

pytest.importorskip("torch")
pytest.importorskip("transformers")


@pytest.mark.parametrize("family", DECODERS)
def test_decoder_parity_both_formats(family, tmp_path):
    from mlx_lm import load

    st, pt, model = checkpoint(family)
    ref = torch_logits(model)
    for tag, src in (("st", st), ("bin", pt)):
        result = convert(src, tmp_path / tag, dtype="float32")
        assert result.model_type == family and result.kind == "decoder"
        mlx_model, tokenizer = load(str(tmp_path / tag))
        np.testing.assert_allclose(mlx_logits(mlx_model), ref, atol=1e-4, rtol=0, err_msg=f"{family} {tag}")
        assert tokenizer is not None
        assert (tmp_path / tag / "tokenizer.json").read_bytes() == (src / "tokenizer.json").read_bytes()
    cfg = json.loads((tmp_path / "st" / "config.json").read_text())
    assert "lacy" not in cfg and "quantization" not in cfg


@pytest.mark.parametrize("family", DECODERS)
def test_call_token_keeps_old_logits(family, tmp_path):
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm import load

    from lacy_mlx.convert.call_tokens import token_matrices

    _, pt, model = checkpoint(family)
    result = convert(pt, tmp_path / "out", add_call_token=True)
    assert result.lacy.call_token_id == VOCAB and result.lacy.evidence_end_id == VOCAB + 2
    mlx_model, _ = load(str(tmp_path / "out"))
    got = mlx_logits(mlx_model)
    assert got.shape[-1] == VOCAB + 3
    np.testing.assert_allclose(got[..., :VOCAB], torch_logits(model), atol=1e-4, rtol=0)
    params = dict(tree_flatten(mlx_model.parameters()))
    for key in filter(None, token_matrices(mlx_model)):
        rows = np.array(params[key].astype(mx.float32))
        np.testing.assert_allclose(rows[VOCAB:], np.broadcast_to(rows[:VOCAB].mean(0), rows[VOCAB:].shape), atol=1e-6)


@pytest.mark.parametrize("fmt", ["st", "bin"])
def test_bert_encoder_parity(fmt, tmp_path):
    import mlx.core as mx
    import torch

    from lacy_mlx.encoder.loader import load_encoder

    st, pt, model = checkpoint("bert")
    result = convert(st if fmt == "st" else pt, tmp_path / "enc")
    assert result.kind == "encoder" and result.dtype == "float32"
    loaded = load_encoder(tmp_path / "enc")
    ids = [PROBE[0][:10]]
    with torch.no_grad():
        ref = model(input_ids=torch.tensor(ids)).last_hidden_state.numpy()
    got = np.array(loaded.model(mx.array(ids)))
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)
