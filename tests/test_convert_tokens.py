"""<CALL> surgery: new tokens get ids and mean rows; old tokens' logits do not move."""
from __future__ import annotations

import json

import numpy as np
import pytest

from convert_models import VOCAB, checkpoint, mlx_logits, torch_logits
from lacy_mlx.convert import ConvertError, convert
from lacy_mlx.tokens import CALL_TOKEN, EVIDENCE_END, EVIDENCE_START, read_lacy_section

pytest.importorskip("torch")
pytest.importorskip("transformers")


def _load(folder):
    from mlx_lm import load

    return load(str(folder))


@pytest.mark.parametrize("family,tie,embed,head", [
    ("llama", False, "model.embed_tokens.weight", "lm_head.weight"),
    ("qwen3", True, "model.embed_tokens.weight", None),
    ("gpt2", None, "model.wte.weight", None),
])
def test_growth_keeps_old_logits(family, tie, embed, head, tmp_path):
    import mlx.core as mx
    from tokenizers import Tokenizer

    st, _, model = checkpoint(family, tie=tie)
    result = convert(st, tmp_path / "out", add_call_token=True)
    out = tmp_path / "out"
    ids = {CALL_TOKEN: VOCAB, EVIDENCE_START: VOCAB + 1, EVIDENCE_END: VOCAB + 2}
    lacy = read_lacy_section(out)
    assert (lacy.call_token_id, lacy.evidence_start_id, lacy.evidence_end_id) == tuple(ids.values())
    assert result.lacy == lacy
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["vocab_size"] == VOCAB + 3

    mlx_model, _ = _load(out)
    got = mlx_logits(mlx_model)
    assert got.shape[-1] == VOCAB + 3
    np.testing.assert_allclose(got[..., :VOCAB], torch_logits(model), atol=1e-4, rtol=0)

    weights = mx.load(str(out / "model.safetensors"))
    for key in filter(None, (embed, head)):
        rows = np.array(weights[key])
        np.testing.assert_allclose(rows[VOCAB:], np.broadcast_to(rows[:VOCAB].mean(0), (3, rows.shape[1])), atol=1e-6)

    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    assert tok.encode("w5 <CALL> w9 <EVIDENCE> w7 </EVIDENCE>", add_special_tokens=False).ids == [
        5, VOCAB, 9, VOCAB + 1, 7, VOCAB + 2]
    decoder = json.loads((out / "tokenizer_config.json").read_text())["added_tokens_decoder"]
    assert decoder[str(VOCAB)] == {"content": CALL_TOKEN, "lstrip": False, "normalized": False,
                                   "rstrip": False, "single_word": False, "special": True}


def test_spare_rows_are_reused(tmp_path):
    spare = VOCAB + 8
    st, _, model = checkpoint("llama", vocab=spare, n_tokens=VOCAB)
    convert(st, tmp_path / "out", add_call_token=True)
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    assert cfg["vocab_size"] == spare
    assert cfg["lacy"]["call_token_id"] == VOCAB and cfg["lacy"]["evidence_end_id"] == VOCAB + 2
    got = mlx_logits(_load(tmp_path / "out")[0])
    assert got.shape[-1] == spare
    ref = torch_logits(model)
    np.testing.assert_allclose(got[..., :VOCAB], ref[..., :VOCAB], atol=1e-4, rtol=0)
    np.testing.assert_allclose(got[..., VOCAB + 3:], ref[..., VOCAB + 3:], atol=1e-4, rtol=0)  # untouched spares


def test_surgery_is_idempotent_and_existing_ids_are_recorded(tmp_path):
    st, _, _ = checkpoint("llama")
    convert(st, tmp_path / "once", add_call_token=True)
    convert(tmp_path / "once", tmp_path / "twice", add_call_token=True)
    convert(tmp_path / "once", tmp_path / "plain")
    for name in ("twice", "plain"):
        cfg = json.loads((tmp_path / name / "config.json").read_text())
        assert cfg["vocab_size"] == VOCAB + 3 and cfg["lacy"]["call_token_id"] == VOCAB


def test_encoders_refuse_call_tokens(tmp_path):
    with pytest.raises(ConvertError, match="encoder"):
        convert(checkpoint("bert")[0], tmp_path / "out", add_call_token=True)


def _built(family, tie=None):
    """The mlx-lm model a tiny ``family`` config builds (random weights), with its config."""
    from convert_models import hf_config

    from lacy_mlx.convert.config_fix import normalise_config
    from lacy_mlx.convert.decoder import build_model
    from lacy_mlx.convert.families import family_for

    cfg = hf_config(family, tie=tie).to_dict()
    cfg = normalise_config(cfg, family_for(cfg, "config.json"))
    return build_model(cfg, "config.json"), cfg


@pytest.mark.parametrize("family,tie,want", [
    ("llama", False, ("model.embed_tokens.weight", "lm_head.weight")),
    ("qwen3", True, ("model.embed_tokens.weight", None)),
    ("gpt2", None, ("model.wte.weight", None)),  # wpe (128 rows) is an Embedding too
    ("gpt_neox", None, ("model.embed_in.weight", "model.embed_out.weight")),
    ("mamba", None, ("backbone.embeddings.weight", None)),
    # mlx-lm's gemma3 ties its head in sanitize, when the checkpoint has none; built, it is untied
    ("gemma3", None, ("language_model.model.embed_tokens.weight", "language_model.lm_head.weight")),
])
@pytest.mark.parametrize("quantized", [False, True])
def test_token_matrices_found_on_the_built_model(family, tie, want, quantized):
    import mlx.nn as nn

    from lacy_mlx.convert.call_tokens import token_matrices

    model, _ = _built(family, tie)
    if quantized:
        nn.quantize(model, group_size=32, bits=4,
                    class_predicate=lambda _, m: hasattr(m, "to_quantized") and m.weight.shape[-1] % 32 == 0)
        assert any(isinstance(m, nn.QuantizedEmbedding) for _, m in model.named_modules())
    found = token_matrices(model)
    assert found == want and (found.embed, found.head) == want
    assert all(type(m).__module__.startswith("mlx.") or not isinstance(m, (nn.Linear, nn.Embedding))
               for _, m in model.named_modules())  # the recording classes were swapped back


def test_quantized_rows_grow_with_the_mean_and_keep_old_rows():
    import mlx.core as mx
    import mlx.nn as nn
    from mlx.utils import tree_flatten

    from lacy_mlx.convert.call_tokens import TokenPlan, grow_rows, token_matrices

    model, _ = _built("llama", tie=False)
    nn.quantize(model, group_size=32, bits=8)
    weights = dict(tree_flatten(model.parameters()))
    old = {k: np.array(v) for k, v in weights.items()}
    plan = TokenPlan(ids={CALL_TOKEN: VOCAB, EVIDENCE_START: VOCAB + 1, EVIDENCE_END: VOCAB + 2},
                     tokenizer_len=VOCAB, rows_before=VOCAB, rows_after=VOCAB + 3,
                     added=(CALL_TOKEN, EVIDENCE_START, EVIDENCE_END))
    with pytest.raises(ConvertError, match="needs the model"):
        grow_rows(dict(weights), token_matrices(model), plan)
    grown = grow_rows(weights, token_matrices(model), plan, model)
    for module in ("model.embed_tokens", "lm_head"):
        parts = [grown[f"{module}.{p}"] for p in ("weight", "scales", "biases")]
        assert all(p.shape[0] == VOCAB + 3 for p in parts)
        for p, name in zip(parts, ("weight", "scales", "biases")):
            np.testing.assert_array_equal(np.array(p[:VOCAB]), old[f"{module}.{name}"])
        dense = np.array(mx.dequantize(*parts, group_size=32, bits=8))
        np.testing.assert_allclose(dense[VOCAB:], np.broadcast_to(dense[:VOCAB].mean(0), (3, dense.shape[1])),
                                   atol=2e-3)
