"""Fused kernel sources (Metal and CUDA) and the dispatcher that picks one per device.

Shipped as ``lacy_mlx.kernels``; the sources sit beside this file and are read at run time.
"""
from pathlib import Path

KERNEL_DIR = Path(__file__).resolve().parent


def kernel_source(name: str) -> str:
    """Return the text of the kernel source file ``name`` shipped in this package."""
    path = KERNEL_DIR / name
    if not path.is_file():
        raise FileNotFoundError(f"kernel source {name!r} is not shipped in {KERNEL_DIR}")
    return path.read_text(encoding="utf-8")
