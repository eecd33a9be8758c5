"""PyTorch / Hugging Face checkpoints to MLX folders (shipped as ``lacy_mlx.convert``).

``convert(src, out, ...)`` is the entry point; ``FAMILIES`` lists what it supports. Readers,
families, <CALL> surgery, writing and verification each live in their own module.
"""
from .api import DTYPES, ConvertResult, convert
from .errors import (
    ConvertError,
    CorruptFileError,
    MissingConfigError,
    MissingDependencyError,
    MissingWeightsError,
    ShapeMismatchError,
    UnknownArchitectureError,
    UnsupportedDtypeError,
    VerificationError,
)
from .families import FAMILIES, Family
from .verify import VerifyReport

__all__ = [
    "DTYPES", "FAMILIES", "ConvertError", "ConvertResult", "CorruptFileError", "Family",
    "MissingConfigError", "MissingDependencyError", "MissingWeightsError", "ShapeMismatchError",
    "UnknownArchitectureError", "UnsupportedDtypeError", "VerificationError", "VerifyReport", "convert",
]
