"""Operations on a built MLX model (decoder or encoder): checked loading, casting, quantization."""
from __future__ import annotations

import contextlib
import io
from typing import Any, Callable

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_map_with_path

from .errors import ConvertError
from .shapes import check_against


DTYPES = {"float16": mx.float16, "bfloat16": mx.bfloat16, "float32": mx.float32}


def dtype_name(dtype: mx.Dtype) -> str:
    """"float16" for mx.float16 (float32 for anything not in DTYPES)."""
    return next((k for k, v in DTYPES.items() if v == dtype), "float32")


def float_dtype(params: dict[str, mx.array]) -> mx.Dtype:
    """The widest float dtype among ``params`` (the output dtype when none was asked for)."""
    floats = {v.dtype for v in params.values() if mx.issubdtype(v.dtype, mx.floating)}
    return next((d for d in (mx.float32, mx.bfloat16, mx.float16) if d in floats), mx.float32)


def load_checked(model: nn.Module, weights: dict[str, mx.array], file_of: Callable[[str], str]) -> None:
    """Check every name and shape against the model's parameters, then load them."""
    params = tree_flatten(model.parameters())
    expected = {k: tuple(v.shape) for k, v in params}
    floating = {k for k, v in params if mx.issubdtype(v.dtype, mx.floating)}
    check_against(expected, weights, file_of, f"MLX {type(model).__module__.rsplit('.', 1)[-1]} model", floating)
    model.load_weights(list(weights.items()), strict=True)


def names_fit(model: nn.Module, weights: dict[str, mx.array]) -> bool:
    """Whether ``weights`` has exactly the model's parameter names (shapes not checked)."""
    return set(weights) == {k for k, _ in tree_flatten(model.parameters())}


def cast(model: nn.Module, dtype: mx.Dtype) -> None:
    """Cast floating parameters to ``dtype``, honouring a model's cast_predicate as mlx-lm does."""
    keep = getattr(model, "cast_predicate", lambda _: True)

    def to(path: str, value: mx.array) -> mx.array:
        if keep(path) and mx.issubdtype(value.dtype, mx.floating):
            return value.astype(dtype)
        return value

    model.update(tree_map_with_path(to, model.parameters()))


def quantize(model: nn.Module, config: dict[str, Any], bits: int, group_size: int) -> dict[str, Any]:
    """MLX affine quantization with mlx-lm's predicate; returns the config with its quantization entry."""
    from mlx_lm.utils import quantize_model

    dims = [v.shape[-1] for k, v in tree_flatten(model.parameters()) if k.endswith("weight") and v.ndim == 2]
    if dims and all(d % group_size for d in dims):
        raise ConvertError(
            f"group size {group_size} divides no layer's input size ({sorted(set(dims))}); "
            "pick 32, 64 or 128 dividing the hidden size"
        )
    with contextlib.redirect_stdout(io.StringIO()):  # mlx-lm prints bits-per-weight
        _, config = quantize_model(model, config, group_size, bits)
    return config
