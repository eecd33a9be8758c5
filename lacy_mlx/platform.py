"""Facts about the machine that other modules branch on."""
from __future__ import annotations

import functools
import os
import platform
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

def cache_root() -> Path:
    """Where lacy-mlx keeps what it builds once per machine (CPU kernels, the default model):
    ``$LACY_MLX_CACHE``, else ``$XDG_CACHE_HOME/lacy-mlx``, else ``~/.cache/lacy-mlx``."""
    if os.environ.get("LACY_MLX_CACHE"):
        return Path(os.environ["LACY_MLX_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lacy-mlx"


def openblas_preloaded() -> bool:
    """Whether this process runs with OpenBLAS preloaded (benchmarks print it next to CPU numbers)."""
    return "openblas" in os.environ.get("LD_PRELOAD", "")


# glibc mallopt parameters (malloc.h) and the values keep_freed_memory sets.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD = 32 << 20  # glibc's largest: blocks below it come from the heap, not fresh mmaps
_TRIM_THRESHOLD = 128 << 20  # free memory at the heap's top kept for reuse instead of returned
_malloc_tuned: bool | None = None


def keep_freed_memory() -> bool:
    """Make glibc keep freed blocks below 32 MB for reuse; True when set (now or before).

    MLX's CPU buffer cache holds 32 MB on Linux, so a forward pass whose shapes change from batch
    to batch (the encoder over texts of many lengths) frees and reallocates its activations
    through malloc; glibc returns such blocks to the OS and every reuse then page-faults (1e5
    faults and ~10% of the encoder's time on 256-token texts). Process-wide, called once by the
    CPU code paths that gain; costs up to 128 MB of freed memory kept mapped. Not glibc (macOS,
    musl) or ``LACY_MLX_MALLOC=system``: does nothing and returns False.
    """
    global _malloc_tuned
    if _malloc_tuned is None:
        _malloc_tuned = False
        if platform.system() == "Linux" and os.environ.get("LACY_MLX_MALLOC", "") != "system":
            import ctypes

            try:
                libc = ctypes.CDLL(None)
                ok = bool(libc.gnu_get_libc_version) and libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD) == 1
                _malloc_tuned = ok and libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD) == 1
            except (OSError, AttributeError):
                pass
    return _malloc_tuned


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS
        return max(1, os.cpu_count() or 1)


@functools.cache
def _openblas_threads_api():
    """``(get, set)`` of the OpenBLAS MLX calls into, when this process has one loaded; else None.

    Looked up once: the libraries a process has loaded at its first embed do not change.
    """
    import ctypes

    try:
        lib = ctypes.CDLL(None)
        return lib.openblas_get_num_threads, lib.openblas_set_num_threads
    except (OSError, AttributeError):
        return None


@contextmanager
def blas_threads(n: int) -> Iterator[None]:
    """Within the block, OpenBLAS runs each call on ``n`` threads; the old count comes back after.

    For code that runs several single-threaded MLX CPU streams side by side (one core each).
    Process-wide while it lasts: BLAS calls from other threads see ``n`` too. Does nothing when no
    OpenBLAS is loaded (macOS's Accelerate, MLX's bundled single-threaded BLAS).
    """
    api = _openblas_threads_api()
    before = api[0]() if api else n
    if before != n:
        api[1](int(n))
    try:
        yield
    finally:
        if before != n:
            api[1](before)
