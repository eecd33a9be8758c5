"""Find and read a checkpoint's config and weights, whatever the file layout.

Supported layouts (first match wins): ``model.safetensors.index.json`` + shards,
``model*.safetensors``, ``pytorch_model.bin.index.json`` + shards, ``pytorch_model.bin``, and a
raw PyTorch state dict (``*.pt``/``*.pth``, or a file path given directly) next to config.json.
Safetensors are read with MLX (bf16 intact, no torch); pickles need torch (see pickles.py).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlx.core as mx

from .errors import CorruptFileError, MissingConfigError, MissingWeightsError, UnsupportedDtypeError

ST_INDEX = "model.safetensors.index.json"
BIN_INDEX = "pytorch_model.bin.index.json"
_RAW_SUFFIXES = (".pt", ".pth", ".bin")
# Trainer-checkpoint files that sit beside weights but hold no model tensors.
_NOT_WEIGHTS = re.compile(r"^(training_args\.bin|optimizer\.pt|scheduler\.pt|scaler\.pt|rng_state.*\.pth)$")
# Safetensors dtypes MLX reads directly; F64 is read through numpy and narrowed to float32.
_ST_DTYPES = {"F16", "BF16", "F32", "I64", "I32", "I16", "I8", "U8", "U16", "U32", "U64", "BOOL"}


@dataclass
class Checkpoint:
    """Where a checkpoint's pieces live; ``origin`` is filled in by ``load_weights``."""

    root: Path
    config_path: Path
    config: dict[str, Any]
    weight_files: list[Path]
    layout: str  # "safetensors" | "pytorch" | "state_dict"
    index_keys: set[str] | None = None  # tensor names an index json promises
    origin: dict[str, Path] = field(default_factory=dict)  # tensor name -> file it came from

    def file_of(self, key: str) -> str:
        """The file a (possibly renamed) tensor came from, for error messages."""
        if key in self.origin:
            return str(self.origin[key])
        tail = key.split(".", 1)[-1]
        for name, path in self.origin.items():
            if name.endswith(tail):
                return str(path)
        return ", ".join(str(p) for p in self.weight_files)


def locate(src: str | Path) -> Checkpoint:
    """Find config.json and the weight files of ``src`` (a folder, or a weight file beside config.json)."""
    src = Path(src).expanduser()
    if not src.exists():
        raise MissingWeightsError(f"{src}: no such file or folder")
    root = src if src.is_dir() else src.parent
    config_path = root / "config.json"
    config = read_config(config_path)
    if src.is_file():
        layout = "safetensors" if src.suffix == ".safetensors" else "state_dict"
        return Checkpoint(root, config_path, config, [src], layout)
    return _locate_in_folder(root, config_path, config)


def read_config(config_path: Path) -> dict[str, Any]:
    """Parse config.json, turning absence or bad JSON into MissingConfigError."""
    if not config_path.is_file():
        raise MissingConfigError(
            f"{config_path}: missing; a checkpoint folder needs the Hugging Face config.json "
            "that describes its architecture (copy it next to the weights)"
        )
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MissingConfigError(f"{config_path}: not valid JSON ({exc})") from exc
    if not isinstance(config, dict):
        raise MissingConfigError(f"{config_path}: expected a JSON object")
    return config


def _locate_in_folder(root: Path, config_path: Path, config: dict[str, Any]) -> Checkpoint:
    for index_name, layout in ((ST_INDEX, "safetensors"), (BIN_INDEX, "pytorch")):
        if (root / index_name).is_file():
            files, keys = _read_index(root / index_name)
            return Checkpoint(root, config_path, config, files, layout, index_keys=keys)
    shards = sorted(root.glob("model*.safetensors")) or sorted(root.glob("*.safetensors"))
    if shards:
        return Checkpoint(root, config_path, config, shards, "safetensors")
    if (root / "pytorch_model.bin").is_file():
        return Checkpoint(root, config_path, config, [root / "pytorch_model.bin"], "pytorch")
    raw = sorted(p for s in _RAW_SUFFIXES for p in root.glob(f"*{s}") if not _NOT_WEIGHTS.match(p.name))
    if len(raw) == 1:
        return Checkpoint(root, config_path, config, raw, "state_dict")
    found = ", ".join(p.name for p in raw) or "none"
    raise MissingWeightsError(
        f"{root}: no weights found (looked for model.safetensors, sharded safetensors with "
        f"{ST_INDEX}, pytorch_model.bin, sharded .bin with {BIN_INDEX}, or one .pt/.pth state "
        f"dict; candidate files: {found}); pass the weight file itself when there are several"
    )


def _read_index(index_path: Path) -> tuple[list[Path], set[str]]:
    try:
        weight_map = json.loads(index_path.read_text(encoding="utf-8"))["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise CorruptFileError(f"{index_path}: not a shard index (needs a 'weight_map' object): {exc}") from exc
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) and v for v in weight_map.values()):
        raise CorruptFileError(f"{index_path}: the 'weight_map' must map tensor names to shard file names")
    root = index_path.parent.resolve()
    files = []
    for name in sorted(set(weight_map.values())):
        path = index_path.parent / name
        # An index is data from the download: a shard name must not lead out of the checkpoint folder.
        if Path(name).is_absolute() or not path.resolve().is_relative_to(root):
            raise CorruptFileError(
                f"{index_path}: lists shard {name!r}, which is outside the checkpoint folder; "
                "shards must be files in the same folder as the index"
            )
        files.append(path)
    for path in files:
        if not path.is_file():
            raise MissingWeightsError(f"{index_path}: lists shard {path.name}, which is missing")
    return files, set(weight_map)


def load_weights(ckpt: Checkpoint, cast_to: mx.Dtype | None = None,
                 hub_layout: bool = False) -> dict[str, mx.array]:
    """Read every tensor of ``ckpt`` as MLX arrays and record where each came from.

    ``cast_to`` casts floating tensors one at a time as they are read, so peak memory holds
    the output copy plus one source tensor instead of both full copies. ``hub_layout`` puts
    pickled transformers-5 in-memory state dicts back into the Hub layout (hub_layout.py).
    """
    weights: dict[str, mx.array] = {}
    for path in ckpt.weight_files:
        if path.suffix == ".safetensors":
            part = read_safetensors(path)
        else:
            from .pickles import read_pickle

            part = read_pickle(path, cast_to, ckpt.root if hub_layout else None)
        for key in part:
            ckpt.origin[key] = path
            if cast_to is not None and mx.issubdtype(part[key].dtype, mx.floating) and part[key].dtype != cast_to:
                part[key] = part[key].astype(cast_to)
                mx.eval(part[key])  # frees the source tensor now, not at the end
        weights.update(part)
        mx.clear_cache()  # MLX keeps freed buffers for reuse; source-sized ones will not be reused
    if ckpt.index_keys is not None:
        missing = sorted(ckpt.index_keys - set(weights))
        if missing:
            raise CorruptFileError(
                f"{ckpt.weight_files[0].parent}: the shard index lists {len(missing)} tensors no "
                f"shard holds (first: {missing[0]}); re-download the shards"
            )
    if not weights:
        raise MissingWeightsError(f"{', '.join(map(str, ckpt.weight_files))}: holds no tensors")
    return weights


def read_safetensors(path: Path) -> dict[str, mx.array]:
    """Read one safetensors file after checking its header against the file size."""
    header = _safetensors_header(path)
    wide = [k for k, v in header.items() if k != "__metadata__" and v["dtype"] == "F64"]
    for key, info in header.items():
        if key != "__metadata__" and info["dtype"] not in _ST_DTYPES | {"F64"}:
            raise UnsupportedDtypeError(
                f"{path}: tensor {key} is stored as {info['dtype']}, which cannot be converted; "
                "supported: float16, bfloat16, float32, float64 and integer types"
            )
    if wide:  # MLX cannot read F64; go through numpy for the whole file
        from safetensors.numpy import load_file

        arrays = load_file(str(path))
        return {k: mx.array(v.astype("float32") if v.dtype.kind == "f" else v) for k, v in arrays.items()}
    try:
        return mx.load(str(path))
    except (RuntimeError, ValueError) as exc:
        raise CorruptFileError(f"{path}: cannot read safetensors ({exc})") from exc


def _safetensors_header(path: Path) -> dict[str, Any]:
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        if n <= 0 or 8 + n > size:
            raise CorruptFileError(f"{path}: truncated or not a safetensors file (bad header length)")
        try:
            header = json.loads(fh.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CorruptFileError(f"{path}: corrupted safetensors header ({exc})") from exc
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + n + end > size:
        raise CorruptFileError(
            f"{path}: truncated ({size} bytes, header promises {8 + n + end}); re-download or re-save it"
        )
    return header
