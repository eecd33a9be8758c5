"""Check converted tensors against the parameters the MLX model declares, before anything is written."""
from __future__ import annotations

from typing import Any, Callable

from .errors import ShapeMismatchError, UnsupportedDtypeError


def check_against(
    expected: dict[str, tuple[int, ...]],
    weights: dict[str, Any],
    file_of: Callable[[str], str],
    what: str,
    floating: set[str] | None = None,
) -> None:
    """Raise ShapeMismatchError unless ``weights`` has exactly the names and shapes of ``expected``,
    and UnsupportedDtypeError for an integer or boolean tensor where the model holds a floating
    parameter (the names in ``floating``; a quantized model's packed weights are integers).

    ``file_of(name)`` names the source file for a tensor; ``what`` names the model in messages.
    """
    missing = sorted(set(expected) - set(weights))
    extra = sorted(set(weights) - set(expected))
    if missing:
        raise ShapeMismatchError(
            f"{file_of(missing[0])}: {len(missing)} tensors the {what} needs are missing "
            f"(first: {missing[:3]}); the checkpoint does not match its config.json"
        )
    if extra:
        raise ShapeMismatchError(
            f"{file_of(extra[0])}: {len(extra)} tensors the {what} has no place for "
            f"(first: {extra[:3]}); the checkpoint does not match its config.json"
        )
    for name, shape in expected.items():
        got = tuple(weights[name].shape)
        if got != tuple(shape):
            raise ShapeMismatchError(
                f"{file_of(name)}: tensor {name} has shape {list(got)} but the {what} built from "
                f"config.json expects {list(shape)}; check that config.json belongs to these weights"
            )
        if floating is not None and name in floating and not _floating(getattr(weights[name], "dtype", None)):
            raise UnsupportedDtypeError(
                f"{file_of(name)}: tensor {name} is stored as {weights[name].dtype}, but the {what} needs a "
                "floating-point weight there; lacy-mlx converts float16, bfloat16, float32 and float64 weights "
                "(a quantized checkpoint must be converted from its unquantized original)"
            )


def _floating(dtype: Any) -> bool:
    if dtype is None:
        return True
    import mlx.core as mx

    if isinstance(dtype, mx.Dtype):
        return mx.issubdtype(dtype, mx.floating)
    return getattr(dtype, "kind", "f") == "f"
