"""Every conversion error names the file and the problem, and leaves no output folder behind."""
from __future__ import annotations

import json
import sys

import pytest

from convert_models import checkpoint, fresh_copy
from lacy_mlx.cli import main
from lacy_mlx.convert import (
    ConvertError,
    CorruptFileError,
    MissingConfigError,
    MissingDependencyError,
    MissingWeightsError,
    ShapeMismatchError,
    UnknownArchitectureError,
    UnsupportedDtypeError,
    convert,
)
from lacy_mlx.errors import LacyError

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")


def _no_leftovers(parent):
    return [p.name for p in parent.iterdir()] == []


@pytest.mark.parametrize("model_type", ["mamba_x", "cache", "../llama", None])
def test_unknown_architecture_says_mlx_lm_has_no_such_model(model_type, tmp_path):
    src = fresh_copy(checkpoint("llama")[0], "unknown-arch")
    cfg = json.loads((src / "config.json").read_text())
    cfg["model_type"] = model_type
    (src / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UnknownArchitectureError) as err:
        convert(src, tmp_path / "out")
    msg = str(err.value)
    assert msg.startswith(str(src / "config.json")) and "\n" not in msg
    if model_type is None:
        assert "has no model_type" in msg
    else:
        assert repr(model_type) in msg and "not a model mlx-lm" in msg and "pip install -U mlx-lm" in msg
        assert "encoders: bert" in msg
    if model_type == "mamba_x":
        assert "close: mamba" in msg
    assert _no_leftovers(tmp_path)


def test_mlx_lm_module_that_exits_is_a_dependency_error(tmp_path):
    """mlx-lm's olmo module calls sys.exit when ai2-olmo is absent; conversion must not exit."""
    import importlib.util

    if importlib.util.find_spec("hf_olmo") is not None:
        pytest.skip("ai2-olmo is installed, so mlx-lm's olmo module imports")
    src = fresh_copy(checkpoint("llama")[0], "olmo-arch")
    cfg = json.loads((src / "config.json").read_text())
    cfg["model_type"] = "olmo"
    (src / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(MissingDependencyError, match="olmo model needs a package"):
        convert(src, tmp_path / "out")


def test_missing_config(tmp_path):
    src = fresh_copy(checkpoint("llama")[0], "no-config")
    (src / "config.json").unlink()
    with pytest.raises(MissingConfigError, match="config.json: missing"):
        convert(src, tmp_path / "out")
    (src / "config.json").write_text("{not json")
    with pytest.raises(MissingConfigError, match="not valid JSON"):
        convert(src, tmp_path / "out")


@pytest.mark.parametrize("fmt", ["st", "bin"])
def test_shape_mismatch_names_file_and_tensor(fmt, tmp_path):
    st, pt, _ = checkpoint("qwen2")
    src = fresh_copy(st if fmt == "st" else pt, f"shape-{fmt}")
    cfg = json.loads((src / "config.json").read_text())
    cfg["intermediate_size"] = 96
    (src / "config.json").write_text(json.dumps(cfg))
    weight_file = "model.safetensors" if fmt == "st" else "pytorch_model.bin"
    with pytest.raises(ShapeMismatchError) as err:
        convert(src, tmp_path / "out")
    msg = str(err.value)
    assert str(src / weight_file) in msg
    assert "model.layers.0.mlp.gate_proj.weight has shape [128, 64]" in msg and "expects [96, 64]" in msg
    assert _no_leftovers(tmp_path)


def test_missing_tensor_is_a_shape_error(tmp_path):
    from safetensors.torch import save_file

    _, _, model = checkpoint("llama")
    src = fresh_copy(checkpoint("llama")[0], "missing-tensor")
    sd = {k: v for k, v in model.state_dict().items() if "layers.1.mlp.up_proj" not in k}
    save_file(sd, str(src / "model.safetensors"))
    with pytest.raises(ShapeMismatchError, match="missing.*up_proj"):
        convert(src, tmp_path / "out")


@pytest.mark.parametrize("fmt", ["st", "bin"])
def test_truncated_file(fmt, tmp_path):
    st, pt, _ = checkpoint("llama")
    src = fresh_copy(st if fmt == "st" else pt, f"trunc-{fmt}")
    path = src / ("model.safetensors" if fmt == "st" else "pytorch_model.bin")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(CorruptFileError) as err:
        convert(src, tmp_path / "out")
    assert str(path) in str(err.value)
    assert _no_leftovers(tmp_path)


def test_corrupted_header_and_missing_shard(tmp_path):
    src = fresh_copy(checkpoint("llama")[0], "garbage")
    (src / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{{{{garbage}}}}..")
    with pytest.raises(CorruptFileError, match="model.safetensors: corrupted"):
        convert(src, tmp_path / "out")
    (src / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"x": "model-00002-of-00002.safetensors"}}))
    with pytest.raises(MissingWeightsError, match="model-00002-of-00002.safetensors"):
        convert(src, tmp_path / "out")


def test_unsupported_dtypes(tmp_path):
    st, pt, model = checkpoint("llama")
    with pytest.raises(UnsupportedDtypeError, match="int8.*float16, bfloat16, float32"):
        convert(st, tmp_path / "out", dtype="int8")
    src = fresh_copy(pt, "complex")
    sd = dict(model.state_dict())
    sd["model.norm.weight"] = sd["model.norm.weight"].to(torch.complex64)
    torch.save(sd, src / "pytorch_model.bin")
    with pytest.raises(UnsupportedDtypeError, match="pytorch_model.bin: tensor model.norm.weight has dtype complex64"):
        convert(src, tmp_path / "out")
    st_src = fresh_copy(st, "float8")
    from safetensors.torch import save_file

    sd = {k: v.clone() for k, v in model.state_dict().items()}
    sd["model.norm.weight"] = sd["model.norm.weight"].to(torch.float8_e4m3fn)
    save_file(sd, str(st_src / "model.safetensors"))
    with pytest.raises(UnsupportedDtypeError, match="model.safetensors: tensor model.norm.weight is stored as F8_E4M3"):
        convert(st_src, tmp_path / "out")
    assert _no_leftovers(tmp_path)


def test_pickles_without_torch_say_how_to_install(tmp_path, monkeypatch):
    _, pt, _ = checkpoint("llama")
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'lacy-mlx\[convert\]'"):
        convert(pt, tmp_path / "out")


def test_failure_while_writing_leaves_nothing(tmp_path, monkeypatch):
    from lacy_mlx.convert import writer

    def boom(*args, **kwargs):
        raise OSError("disk full (injected)")

    monkeypatch.setattr(writer, "copy_side_files", boom)
    with pytest.raises(OSError, match="injected"):
        convert(checkpoint("llama")[0], tmp_path / "out")
    assert _no_leftovers(tmp_path)


def test_existing_output_needs_overwrite(tmp_path):
    st = checkpoint("llama")[0]
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.txt").write_text("keep me")
    with pytest.raises(ConvertError, match="already exists"):
        convert(st, tmp_path / "out")
    assert (tmp_path / "out" / "old.txt").is_file()
    convert(st, tmp_path / "out", overwrite=True)
    assert not (tmp_path / "out" / "old.txt").exists() and (tmp_path / "out" / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_errors_are_lacy_errors_and_cli_exits_1(tmp_path, capsys):
    src = tmp_path / "empty"
    src.mkdir()
    (src / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(MissingWeightsError) as err:
        convert(src, tmp_path / "out")
    assert isinstance(err.value, LacyError)
    assert main(["convert", str(src), "--out", str(tmp_path / "out")]) == 1
    assert "no weights found" in capsys.readouterr().err


def test_cli_converts(tmp_path, capsys):
    st = checkpoint("gemma2")[0]
    assert main(["convert", str(st), "--out", str(tmp_path / "out"), "--dtype", "bfloat16", "--json"]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["model_type"] == "gemma2" and line["dtype"] == "bfloat16"
