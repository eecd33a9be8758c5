"""Write the converted folder atomically: build it in a hidden sibling folder, then rename.

A failure at any point removes the staging folder, so ``out`` either does not exist or holds a
complete conversion. The rename is atomic on one filesystem, which a sibling folder guarantees.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import mlx.core as mx

from .errors import ConvertError

# Files (and folders) beside the weights that the converted model still needs, as globs.
SIDE_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    "tokenizer.model", "spiece.model", "*.tiktoken", "vocab.json", "vocab.txt", "merges.txt",
    "generation_config.json", "chat_template.json", "chat_template.jinja",
    "modules.json", "sentence_bert_config.json", "config_sentence_transformers.json",
    "1_Pooling", "2_Normalize",
)
DEFAULT_SHARD_BYTES = 5 << 30
_UNITS = {"": 1, "B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}


def parse_size(size: int | str) -> int:
    """Bytes for 5000000, "500MB", "5GB" (binary units)."""
    if isinstance(size, int):
        value = size
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?B?)\s*", str(size).upper())
        if not match:
            raise ConvertError(f"max shard size {size!r} is not a size such as 500MB or 5GB")
        value = int(float(match.group(1)) * _UNITS[match.group(2)])
    if value <= 0:
        raise ConvertError(f"max shard size must be positive, got {size!r}")
    return value


@contextmanager
def staged_folder(out: Path, overwrite: bool) -> Iterator[Path]:
    """Yield an empty staging folder; on success it becomes ``out``, on error it disappears."""
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        yield stage
        _publish(stage, out, overwrite)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


def _publish(stage: Path, out: Path, overwrite: bool) -> None:
    if not out.exists():
        os.replace(stage, out)
        return
    if not overwrite:
        raise ConvertError(f"{out}: already exists; choose another --out or pass --overwrite")
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    os.replace(out, old / "x")
    os.replace(stage, out)
    shutil.rmtree(old, ignore_errors=True)


def save_weights(folder: Path, weights: dict[str, mx.array], max_shard_bytes: int) -> list[str]:
    """Write model.safetensors, or numbered shards plus model.safetensors.index.json; return file names."""
    shards: list[dict[str, mx.array]] = [{}]
    size = 0
    for key in sorted(weights):
        nbytes = weights[key].nbytes
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = weights[key]
        size += nbytes
    if len(shards) == 1:
        mx.save_safetensors(str(folder / "model.safetensors"), shards[0], metadata={"format": "mlx"})
        return ["model.safetensors"]
    names, weight_map = [], {}
    for i, shard in enumerate(shards, 1):
        name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        mx.save_safetensors(str(folder / name), shard, metadata={"format": "mlx"})
        names.append(name)
        weight_map.update({k: name for k in shard})
    index = {"metadata": {"total_size": sum(v.nbytes for v in weights.values())}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    return names


def save_config(folder: Path, config: dict[str, Any]) -> None:
    """config.json the way mlx-lm writes it (sorted; quantization mirrored for HF tooling)."""
    from mlx_lm.utils import save_config as mlx_save_config

    mlx_save_config(dict(config), config_path=folder / "config.json")


def copy_side_files(src_root: Path, folder: Path, skip: tuple[str, ...] = ()) -> list[str]:
    """Copy tokenizer and pooling files from the source folder; return the names copied."""
    copied = []
    for pattern in SIDE_FILES:
        for path in sorted(src_root.glob(pattern)):
            if path.name in skip or (folder / path.name).exists():
                continue
            if path.is_dir():
                shutil.copytree(path, folder / path.name)
            else:
                shutil.copy2(path, folder / path.name)
            copied.append(path.name)
    return copied
