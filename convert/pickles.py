"""Read pickled PyTorch weights (pytorch_model.bin, .pt/.pth state dicts). Needs torch, imported lazily."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import mlx.core as mx

from .errors import CorruptFileError, UnsupportedDtypeError, require_torch
from .hub_layout import to_hub_layout

# Wrappers training scripts put around a state dict.
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")


def read_pickle(path: Path, cast_to: mx.Dtype | None = None,
                config_dir: Path | None = None) -> dict[str, mx.array]:
    """Load a pickled state dict safely (weights_only) and return its tensors as MLX arrays.

    ``cast_to`` casts floating tensors as they are copied out, one at a time. With
    ``config_dir`` (the folder of config.json), a transformers-5 in-memory state dict is first
    put back into the Hub layout (see hub_layout.py).
    """
    torch = require_torch(f"reading {path.name}")
    state = _unwrap(_torch_load(torch, path), path)
    state = {k.removeprefix("module."): v for k, v in state.items()}  # DataParallel prefix
    if config_dir is not None:
        state = to_hub_layout(state, config_dir)
    out: dict[str, mx.array] = {}
    for key in list(state):
        value = _to_mlx(torch, state.pop(key), path, key)
        if cast_to is not None and mx.issubdtype(value.dtype, mx.floating):
            value = value.astype(cast_to)
        mx.eval(value)  # copy now so the torch tensor (and its mmap pages) can go
        out[key] = value
    return out


def _torch_load(torch: Any, path: Path) -> Any:
    try:  # mmap keeps peak memory near one copy of the weights
        return torch.load(str(path), weights_only=True, map_location="cpu", mmap=True)
    except RuntimeError as exc:
        if "mmap" not in str(exc):
            raise CorruptFileError(f"{path}: truncated or corrupted PyTorch file ({exc})") from exc
    except Exception as exc:  # pickle / zip errors of many kinds
        raise CorruptFileError(f"{path}: cannot unpickle ({type(exc).__name__}: {exc})") from exc
    try:  # legacy (non-zip) serialisation cannot be memory-mapped
        return torch.load(str(path), weights_only=True, map_location="cpu")
    except Exception as exc:
        raise CorruptFileError(f"{path}: cannot unpickle ({type(exc).__name__}: {exc})") from exc


def _unwrap(obj: Any, path: Path) -> dict[str, Any]:
    if isinstance(obj, dict):
        for key in _WRAPPER_KEYS:
            if isinstance(obj.get(key), dict) and len(obj) <= 4:
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj:
        raise CorruptFileError(f"{path}: expected a state dict (name -> tensor), got {type(obj).__name__}")
    return obj


def _to_mlx(torch: Any, tensor: Any, path: Path, key: str) -> mx.array:
    if not isinstance(tensor, torch.Tensor):
        raise CorruptFileError(f"{path}: entry {key} is a {type(tensor).__name__}, not a tensor")
    tensor = tensor.detach().contiguous()
    if tensor.dtype == torch.bfloat16:  # numpy has no bf16: move the raw bits
        return mx.array(tensor.view(torch.int16).numpy()).view(mx.bfloat16)
    if tensor.dtype == torch.float64:
        return mx.array(tensor.float().numpy())
    if tensor.dtype.is_complex or tensor.dtype not in _supported(torch):
        raise UnsupportedDtypeError(
            f"{path}: tensor {key} has dtype {str(tensor.dtype).replace('torch.', '')}, which cannot be "
            "converted; supported: float16, bfloat16, float32, float64 and integer types"
        )
    return mx.array(tensor.numpy())


def _supported(torch: Any) -> set[Any]:
    return {torch.float16, torch.float32, torch.int64, torch.int32, torch.int16, torch.int8,
            torch.uint8, torch.bool}
