"""Conversion inputs an attacker or a damaged download could hand over (issue 19)."""
from __future__ import annotations

import json

import pytest

from convert_models import checkpoint, fresh_copy
from lacy_mlx.convert import CorruptFileError, UnsupportedDtypeError, convert

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")


@pytest.mark.parametrize("index", ["model.safetensors.index.json", "pytorch_model.bin.index.json"])
@pytest.mark.parametrize("shard", ["../../../../etc/passwd", "/etc/passwd", "sub/../../outside.safetensors"])
def test_shard_paths_outside_the_folder_are_refused(tmp_path, index, shard, monkeypatch):
    src = fresh_copy(checkpoint("llama")[0], "escape")
    (src.parent / "outside.safetensors").write_bytes(b"not read")
    (src / "sub").mkdir(exist_ok=True)
    (src / index).write_text(json.dumps({"weight_map": {"model.norm.weight": shard}}))
    opened: list[str] = []
    real_open = type(src).open

    def spy(self, *a, **k):  # any read of the named file is the failure
        opened.append(str(self))
        return real_open(self, *a, **k)

    monkeypatch.setattr(type(src), "open", spy)
    with pytest.raises(CorruptFileError, match="outside the checkpoint folder"):
        convert(src, tmp_path / "out")
    assert not any("passwd" in p or "outside" in p for p in opened)
    assert not (tmp_path / "out").exists()


def test_a_weight_map_that_is_not_names_is_corrupt(tmp_path):
    src = fresh_copy(checkpoint("llama")[0], "badmap")
    (src / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": 5}}))
    with pytest.raises(CorruptFileError, match="must map tensor names to shard file names"):
        convert(src, tmp_path / "out")


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.bool])
def test_integer_tensor_in_a_weight_place_is_refused(tmp_path, dtype):
    """docs/conversion.md lists the convertible weight dtypes; an integer tensor where a weight goes is not one."""
    st, _, model = checkpoint("llama")
    from safetensors.torch import save_file

    src = fresh_copy(st, f"int-{dtype}")
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    sd["model.norm.weight"] = torch.ones_like(sd["model.norm.weight"]).to(dtype)
    save_file(sd, str(src / "model.safetensors"))
    with pytest.raises(UnsupportedDtypeError, match="model.norm.weight is stored as .*floating-point weight"):
        convert(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()
