"""Errors raised by conversion. Each names the file involved and says what to do."""
from __future__ import annotations

from lacy_mlx.errors import InputError, LacyError


class ConvertError(LacyError):
    """A checkpoint could not be converted; no output folder was left behind."""


class MissingConfigError(ConvertError, InputError):
    """The source folder has no readable config.json."""


class UnknownArchitectureError(ConvertError, InputError):
    """config.json names a model_type the installed mlx-lm has no model for (nor lacy-mlx an encoder)."""


class ShapeMismatchError(ConvertError, InputError):
    """A tensor's shape (or the set of tensor names) disagrees with the MLX model's parameters."""


class CorruptFileError(ConvertError, InputError):
    """A weight file is truncated, corrupted or not in the format its name promises."""


class UnsupportedDtypeError(ConvertError, InputError):
    """A requested dtype, or a tensor's stored dtype, cannot be converted."""


class MissingWeightsError(ConvertError, InputError):
    """The source holds no weight file this converter can read."""


class MissingDependencyError(ConvertError):
    """An optional dependency (torch, transformers) is needed for this input or option."""


class VerificationError(ConvertError):
    """--verify found the MLX model too far from the PyTorch model."""


TORCH_HINT = "install it with: pip install 'lacy-mlx[convert]'"


def require_torch(why: str):
    """Import torch lazily; raise MissingDependencyError saying how to install it."""
    try:
        import torch
    except ImportError as exc:
        raise MissingDependencyError(f"{why} needs PyTorch, which is not installed; {TORCH_HINT}") from exc
    return torch
