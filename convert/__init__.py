"""PyTorch / Hugging Face checkpoints to MLX folders (shipped as ``lacy_mlx.convert``).

``convert(src, out, ...)`` is the entry point. Any decoder the installed mlx-lm implements
converts (``decoder.build_model`` resolves ``model_type`` as mlx-lm does); ``FAMILIES`` holds only
the exceptions (extra renames, nested configs, the BERT encoder). Readers, resolution, <CALL>
surgery, writing and verification each live in their own module.
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
