"""PyTorch / Hugging Face checkpoints to MLX folders (shipped as ``lacy_mlx.convert``).

``convert(src, out, ...)`` is the entry point; the package itself calls it too
(``lacy_mlx.convert(src, out)``). Any decoder the installed mlx-lm implements
converts (``decoder.build_model`` resolves ``model_type`` as mlx-lm does); ``FAMILIES`` holds only
the exceptions (extra renames, nested configs, the BERT encoder). Readers, resolution, <CALL>
surgery, writing and verification each live in their own module.
"""
import sys
import types
from typing import Any

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



class _CallablePackage(types.ModuleType):
    """This package's type: calling ``lacy_mlx.convert(...)`` runs :func:`convert`."""

    def __call__(self, *args: Any, **kwargs: Any) -> ConvertResult:
        return convert(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage

__all__ = [
    "DTYPES", "FAMILIES", "ConvertError", "ConvertResult", "CorruptFileError", "Family",
    "MissingConfigError", "MissingDependencyError", "MissingWeightsError", "ShapeMismatchError",
    "UnknownArchitectureError", "UnsupportedDtypeError", "VerificationError", "VerifyReport", "convert",
]
