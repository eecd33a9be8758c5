"""Facts about the machine that other modules branch on."""
from __future__ import annotations

import os
import platform
from pathlib import Path

# Debian's OpenBLAS; MLX's Linux CPU wheel bundles a slow reference BLAS that preloading replaces.
_OPENBLAS_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/libopenblas.so.0",
)


def openblas_path() -> str | None:
    """Path of a system OpenBLAS to LD_PRELOAD under MLX on Linux, or None (macOS, or not installed)."""
    if platform.system() != "Linux":
        return None
    for cand in _OPENBLAS_CANDIDATES:
        if Path(cand).exists():
            return cand
    return None


def openblas_preloaded() -> bool:
    """Whether this process runs with OpenBLAS preloaded (benchmarks print it next to CPU numbers)."""
    return "openblas" in os.environ.get("LD_PRELOAD", "")
