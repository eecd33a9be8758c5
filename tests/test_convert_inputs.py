"""Input layouts (sharded safetensors/.bin, raw state dicts, bf16) and output sharding."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from convert_models import checkpoint, fresh_copy, mlx_logits, torch_logits
from lacy_mlx.convert import convert

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")


def _load(folder):
    from mlx_lm import load

    return load(str(folder))[0]


def test_sharded_safetensors_with_index(tmp_path):
    _, _, model = checkpoint("qwen3")
    src = tmp_path / "src"
    model.save_pretrained(str(src), max_shard_size="100KB")
    assert (src / "model.safetensors.index.json").is_file()
    assert len(list(src.glob("model-*.safetensors"))) > 1
    convert(src, tmp_path / "out")
    np.testing.assert_allclose(mlx_logits(_load(tmp_path / "out")), torch_logits(model), atol=1e-4, rtol=0)


def test_sharded_bin_with_index(tmp_path):
    st, _, model = checkpoint("llama")
    src = fresh_copy(st, "sharded-bin")
    (src / "model.safetensors").unlink()
    state = model.state_dict()
    names = list(state)
    halves = {"pytorch_model-00001-of-00002.bin": names[: len(names) // 2],
              "pytorch_model-00002-of-00002.bin": names[len(names) // 2:]}
    weight_map = {}
    for file, keys in halves.items():
        torch.save({k: state[k] for k in keys}, src / file)
        weight_map.update({k: file for k in keys})
    (src / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    result = convert(src, tmp_path / "out")
    assert result.source_layout == "pytorch"
    np.testing.assert_allclose(mlx_logits(_load(tmp_path / "out")), torch_logits(model), atol=1e-4, rtol=0)


def test_raw_state_dict_file_with_wrapper_and_module_prefix(tmp_path):
    st, _, model = checkpoint("gpt2")
    src = tmp_path / "raw"
    src.mkdir()
    (src / "config.json").write_text((st / "config.json").read_text())
    sd = {f"module.{k}": v for k, v in model.state_dict().items()}
    torch.save({"state_dict": sd, "epoch": 3}, src / "ckpt.pth")
    for target in (src, src / "ckpt.pth"):  # the folder, or the file itself
        out = tmp_path / f"out-{target.name}"
        result = convert(target, out)
        assert result.source_layout == "state_dict"
        np.testing.assert_allclose(mlx_logits(_load(out)), torch_logits(model), atol=1e-4, rtol=0)


def test_output_sharding_and_dtype(tmp_path):
    import mlx.core as mx

    st, _, model = checkpoint("llama")
    result = convert(st, tmp_path / "out", dtype="float16", max_shard_size="40KB")
    shards = [f for f in result.files if f.startswith("model-")]
    assert len(shards) > 1 and "model.safetensors.index.json" in result.files
    index = json.loads((tmp_path / "out" / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == set(shards)
    for name in shards:
        assert all(v.dtype == mx.float16 for v in mx.load(str(tmp_path / "out" / name)).values())
    np.testing.assert_allclose(mlx_logits(_load(tmp_path / "out")), torch_logits(model), atol=2e-2, rtol=0)


def test_bfloat16_sources_keep_their_bits(tmp_path):
    import mlx.core as mx

    _, _, model = checkpoint("qwen2")
    bf = model.to(torch.bfloat16)
    try:
        bf.save_pretrained(str(tmp_path / "st"))
        (tmp_path / "bin").mkdir()
        (tmp_path / "bin" / "config.json").write_text((tmp_path / "st" / "config.json").read_text())
        torch.save(bf.state_dict(), tmp_path / "bin" / "pytorch_model.bin")
        want = bf.state_dict()["model.embed_tokens.weight"].float().numpy()
    finally:
        model.to(torch.float32)
    for tag in ("st", "bin"):
        result = convert(tmp_path / tag, tmp_path / f"out-{tag}")
        assert result.dtype == "bfloat16"
        got = mx.load(str(tmp_path / f"out-{tag}" / "model.safetensors"))["model.embed_tokens.weight"]
        assert got.dtype == mx.bfloat16
        np.testing.assert_array_equal(np.array(got.astype(mx.float32)), want)


def test_float64_safetensors(tmp_path):
    from safetensors.torch import save_file

    st, _, model = checkpoint("qwen3")
    src = fresh_copy(st, "float64")
    save_file({k: v.double().contiguous() for k, v in model.state_dict().items()}, str(src / "model.safetensors"))
    result = convert(src, tmp_path / "out", dtype="float32")
    assert result.dtype == "float32"
    np.testing.assert_allclose(mlx_logits(_load(tmp_path / "out")), torch_logits(model), atol=1e-4, rtol=0)


def test_safetensors_never_import_torch(tmp_path, monkeypatch):
    st, _, model = checkpoint("phi3")
    ref = torch_logits(model)
    monkeypatch.setitem(sys.modules, "torch", None)  # any `import torch` now fails
    convert(st, tmp_path / "out")
    monkeypatch.undo()
    np.testing.assert_allclose(mlx_logits(_load(tmp_path / "out")), ref, atol=1e-4, rtol=0)


def test_in_memory_state_dicts_go_back_to_the_hub_layout(tmp_path):
    """transformers 5 fuses MoE experts in memory; a torch.save of that converts like the Hub files."""
    from safetensors.torch import load_file

    from lacy_mlx.convert.hub_layout import to_hub_layout

    st, pt, model = checkpoint("mixtral")
    memory = model.state_dict()
    assert any(k.endswith("mlp.experts.gate_up_proj") for k in memory)
    hub = load_file(str(st / "model.safetensors"))
    reverted = to_hub_layout(dict(memory), pt)
    assert set(reverted) == set(hub)
    for key, value in hub.items():
        torch.testing.assert_close(reverted[key], value, rtol=0, atol=0)
    assert to_hub_layout(hub, pt) is hub  # Hub names already: untouched
    foreign = {"x.weight": memory["model.norm.weight"]}
    assert to_hub_layout(foreign, pt) is foreign  # not this model's names


def test_hub_layout_is_asked_for_only_when_names_do_not_fit(tmp_path, monkeypatch):
    """Importing transformers costs seconds, so a pickle whose names fit never pays for it."""
    from lacy_mlx.convert import pickles

    asked = []

    def spy(state, config_dir):
        asked.append(config_dir)
        return real(state, config_dir)

    real = pickles.to_hub_layout
    monkeypatch.setattr(pickles, "to_hub_layout", spy)
    convert(checkpoint("llama")[1], tmp_path / "dense")
    assert asked == []
    _, pt, model = checkpoint("mixtral")
    convert(pt, tmp_path / "moe")
    assert asked == [pt]
    np.testing.assert_allclose(mlx_logits(_load(tmp_path / "moe")), torch_logits(model), atol=1e-4, rtol=0)
