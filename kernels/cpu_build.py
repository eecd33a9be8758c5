"""Build once per machine, load and check the CPU kernels of ``cpu_encoder.cpp``.

MLX 0.32 has no CPU custom-kernel API (``mx.fast`` offers ``metal_kernel`` and ``cuda_kernel``),
so a CPU kernel is an MLX primitive in a small C++ extension. It must be compiled against the
MLX that is installed (its headers, ``libmlx`` and the nanobind ABI its Python types live in),
which no prebuilt wheel can promise, so it is built on first use with the system C++ compiler,
as MLX's own CPU backend does for ``mx.compile``. The result is cached under
``$LACY_MLX_CACHE`` (default ``~/.cache/lacy-mlx``), keyed by the source, the MLX, nanobind and
Python versions and the compiler; ``make`` builds it at install time
(``python -m lacy_mlx.kernels.cpu_build``).

:func:`cpu_kernels` returns the loaded module, or None where there is none to use: not Linux
(Apple's CPU backend vectorises through Accelerate; this is untested there), turned off with
``LACY_MLX_CPU_KERNELS=0``, or a failed build, load or self-check (each warns once, saying
why). Callers then use the plain-MLX twins.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from . import KERNEL_DIR  # relative: this folder is `kernels` in a checkout, `lacy_mlx.kernels` installed
from lacy_mlx.platform import cache_root

SOURCE = "cpu_encoder.cpp"
SOURCES = (SOURCE, "cpu_quant.cpp", "cpu_qmv.cpp", "cpu_decode.cpp", "cpu_block.cpp", "cpu_gate.cpp")  # one extension module; SOURCE holds its NB_MODULE
HEADERS = ("cpu_common.h", "cpu_decode.h", "cpu_exp.h", "cpu_quant.h")
MODULE = "_lacy_cpu_kernels"  # the NB_MODULE name in SOURCE
_FLAGS = ("-O3", "-std=c++20", "-fPIC", "-fvisibility=hidden", "-fno-strict-aliasing", "-DNDEBUG",
          "-DNB_DOMAIN=mlx")  # MLX's Python types are registered in nanobind's "mlx" domain

_lock = threading.RLock()  # reentrant: one kernel's check may use others (the block check, the layer ones)
_loaded: dict[str, ModuleType | None] = {}


class KernelBuildError(RuntimeError):
    """The compiler failed or is missing; the message holds the command and its output's tail."""


def compiler() -> str | None:
    """The C++ compiler to build with: ``$CXX``, else the first of g++, c++, clang++ on PATH; None if none runs."""
    if os.environ.get("CXX"):
        return shutil.which(os.environ["CXX"])
    return next((c for c in ("g++", "c++", "clang++") if shutil.which(c)), None)


@functools.cache
def _compiler_version(cxx: str) -> str:
    out = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=30)
    return out.stdout.splitlines()[0] if out.stdout else cxx


def _toolchain() -> tuple[Path, Path, str, str]:
    """``(mlx package dir, nanobind package dir, compiler, key)``; raises KernelBuildError if one is missing."""
    import mlx
    import mlx.core as mx

    try:
        import nanobind
    except ImportError as exc:
        raise KernelBuildError("nanobind is not installed: pip install 'nanobind>=3.0.1,<3.2'") from exc
    cxx = compiler()
    if cxx is None:
        named = f" (CXX={os.environ['CXX']} is not an executable)" if os.environ.get("CXX") else ""
        raise KernelBuildError(f"no C++ compiler found{named}: install g++ (Debian: apt-get install g++) or set CXX")
    parts = [*((KERNEL_DIR / f).read_text(encoding="utf-8") for f in SOURCES + HEADERS), mx.__version__, nanobind.__version__,
             sys.version, str(sysconfig.get_config_var("EXT_SUFFIX")), _compiler_version(cxx), *_FLAGS]
    key = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]
    return _mlx_dir(mlx), Path(nanobind.__file__).parent, cxx, key


def _mlx_dir(mlx: ModuleType) -> Path:
    """The installed MLX package folder (its headers and libmlx). ``mlx`` is a namespace package: any
    folder named ``mlx`` on sys.path (a checkout, the script's own folder) joins ``mlx.__path__``."""
    for entry in mlx.__path__:
        if (Path(entry) / "include" / "mlx" / "mlx.h").is_file():
            return Path(entry)
    raise KernelBuildError(f"no MLX headers (include/mlx/mlx.h) under any of {list(mlx.__path__)}: reinstall mlx")


def build(force: bool = False) -> Path:
    """Compile the extension into the cache (unless there already) and return its path.

    Atomic: objects are built in a temporary folder next to the final one and renamed into
    place, so concurrent builds or an interrupted one never leave a half-written library.
    """
    mlx_dir, nb_dir, cxx, key = _toolchain()
    final = cache_root() / f"cpu-kernels-{key}"
    target = final / f"{MODULE}{sysconfig.get_config_var('EXT_SUFFIX')}"
    if not force and _intact(target):
        return target
    final.parent.mkdir(parents=True, exist_ok=True)
    print(f"lacy-mlx: compiling the CPU kernels (encoder, quantized matmul, decoder layers) once for this MLX (~10 s) into {final}", file=sys.stderr)
    includes = [f"-I{p}" for p in (nb_dir / "include", nb_dir / "ext" / "robin_map" / "include",
                                   Path(sysconfig.get_paths()["include"]), mlx_dir / "include", KERNEL_DIR)]
    with tempfile.TemporaryDirectory(dir=final.parent, prefix=".build-") as tmp:
        objects = []
        jobs = []
        for src in (nb_dir / "src" / "nb_combined.cpp", *(KERNEL_DIR / f for f in SOURCES)):
            obj = Path(tmp) / f"{src.stem}.o"
            objects.append(str(obj))
            cmd = [cxx, *_FLAGS, *includes, "-c", str(src), "-o", str(obj)]
            jobs.append((cmd, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)))
        for cmd, job in jobs:  # the translation units compile side by side
            _check(cmd, job)
        lib = Path(tmp) / "out" / target.name
        lib.parent.mkdir()
        cmd = [cxx, "-shared", *objects, "-o", str(lib), f"-L{mlx_dir / 'lib'}", "-lmlx",
               f"-Wl,-rpath,{mlx_dir / 'lib'}"]
        _check(cmd, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        _digest_file(lib).write_text(_digest(lib))
        if final.exists():
            if not force and _intact(target):  # another process finished the same build first
                return target
            shutil.rmtree(final, ignore_errors=True)  # damaged (or forced): replaced whole
        try:
            os.replace(lib.parent, final)
        except OSError:
            if not _intact(target):  # not another process's finished build: a real failure
                raise
    return target


def _digest_file(lib: Path) -> Path:
    return lib.with_name(lib.name + ".sha256")


def _digest(lib: Path) -> str:
    return hashlib.sha256(lib.read_bytes()).hexdigest()


def _intact(lib: Path) -> bool:
    """Whether ``lib`` is the library its build wrote: a damaged one would crash ``dlopen`` (SIGBUS)."""
    try:
        return _digest_file(lib).read_text().strip() == _digest(lib)
    except OSError:
        return False


def _check(cmd: list[str], job: subprocess.Popen) -> None:
    out, _ = job.communicate(timeout=600)
    if job.returncode != 0:
        tail = "\n".join(out.splitlines()[-20:])
        hint = "; install the Python headers (Debian: python3-dev)" if "Python.h" in out else ""
        raise KernelBuildError(f"{' '.join(cmd[:2])} ... failed (exit {job.returncode}){hint}:\n{tail}")


def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(MODULE, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _self_check(module: ModuleType) -> None:
    """Run each kernel once against its plain-MLX twin (odd widths, tails, -inf, strided views)."""
    import mlx.core as mx
    import numpy as np

    from lacy_mlx.polyops import exp2_nonpos, gelu_base, gelu_finish

    x = mx.array(np.linspace(-150.0, 30.0, 3 * 37, dtype=np.float32).reshape(3, 37))
    x = mx.concatenate([x, mx.full((3, 1), -np.inf)], axis=1)[:, ::-1]
    w = mx.linspace(0.5, 1.5, 38)
    with mx.stream(mx.cpu):
        checks = {
            "exp2_rowshift": (module.exp2_rowshift(x), exp2_nonpos(x - mx.max(x, axis=-1, keepdims=True))),
            "gelu_erf": (module.gelu_erf(x[:, 1:]), gelu_finish(x[:, 1:], gelu_base(x[:, 1:]))),
        }
        y = x[:, 1:] * 0.1
        norm = mx.fast.layer_norm(y[:, :-1], w[:36], w[1:37], 1e-5)
        checks["layer_norm_rows"] = (module.layer_norm_rows(y, w[:37], w[1:38], 1e-5, 36)[:, :-1], norm)
        for name, (got, want) in checks.items():
            scale = want if name == "exp2_rowshift" else mx.max(mx.abs(want))  # relative to each value / the row scale
            err = float(mx.max(mx.abs(got - want) / scale))
            if not err < 1e-5:
                raise ValueError(f"{name} disagrees with its plain-MLX twin (relative error {err:.3g})")


def cpu_kernels() -> ModuleType | None:
    """The checked kernel module, built on first call if needed, or None (see the module docstring).

    Thread-safe; the outcome, module or None, is kept for the process.
    """
    if os.environ.get("LACY_MLX_CPU_KERNELS", "1") == "0" or platform.system() != "Linux":
        return None
    if SOURCE in _loaded:  # the per-call path: no lock once decided
        return _loaded[SOURCE]
    with _lock:
        if SOURCE not in _loaded:
            _loaded[SOURCE] = _build_and_load()
        return _loaded[SOURCE]


def _check_quant(module: ModuleType) -> None:
    """The quantized matmul and dequantize against ``mx.quantized_matmul`` / ``mx.dequantize``:
    4 and 8 bits, every group size, float32 and float16 scales, 1-6 rows of x (the four-row tiles
    and their tails), 2 threads."""
    import mlx.core as mx

    key = mx.random.key(7)
    before = module.threads()
    module.set_threads(2)
    try:
        with mx.stream(mx.cpu):
            for bits, gs in ((4, 32), (4, 64), (4, 128), (8, 32), (8, 64), (8, 128)):
                w, s, b = mx.quantize(mx.random.normal((40, 256), key=key), gs, bits)
                x = mx.random.normal((6, 256), key=key)
                want = mx.quantized_matmul(x, w, s, b, transpose=True, group_size=gs, bits=bits)
                got = mx.concatenate([module.quantized_matmul(x[: m], w, s, b, gs, bits) for m in range(1, 7)])
                want = mx.concatenate([want[: m] for m in range(1, 7)])
                err = float(mx.max(mx.abs(got - want)) / mx.max(mx.abs(want)))
                deq = float(mx.max(mx.abs(module.dequantize(w, s, b, gs, bits) - mx.dequantize(w, s, b, gs, bits))))
                s16, b16 = s.astype(mx.float16), b.astype(mx.float16)  # GGUF's scales: float16, used as float32
                half = float(mx.max(mx.abs(module.quantized_matmul(x, w, s16, b16, gs, bits) - mx.quantized_matmul(
                    x, w, s16.astype(mx.float32), b16.astype(mx.float32), transpose=True, group_size=gs, bits=bits))))
                half /= float(mx.max(mx.abs(want)))
                if not (err < 1e-5 and deq < 1e-5 and half < 1e-5):
                    raise ValueError(f"quantized_matmul ({bits}-bit, group {gs}) disagrees with mx.quantized_matmul "
                                     f"(relative error {err:.3g}, float16 scales {half:.3g}, dequantize {deq:.3g})")
    finally:
        module.set_threads(before)


def checked_kernels(name: str, check: Callable[[ModuleType], None], fallback: str) -> ModuleType | None:
    """:func:`cpu_kernels` once ``check(module)`` passed for the ops called ``name``; else None. Decided
    once per process (kept in ``_loaded[name]``); a failed check warns once, naming ``fallback``, the
    MLX ops that stay in use, and leaves the other kernels of the module unaffected."""
    module = cpu_kernels()
    if module is None:
        return None
    if name not in _loaded:
        with _lock:
            if name not in _loaded:
                try:
                    check(module)
                    _loaded[name] = module
                except Exception as exc:  # noqa: BLE001 - an optional speed-up: MLX's own ops stay
                    warnings.warn(f"lacy-mlx {name} CPU kernels unusable, using {fallback}: "
                                  f"{type(exc).__name__}: {exc}", stacklevel=3)
                    _loaded[name] = None
    return _loaded[name]


def quant_kernels() -> ModuleType | None:
    """:func:`cpu_kernels` when its quantized matmul also passed its check against MLX's (once per
    process; a failure warns and leaves the encoder's kernels in use); else None."""
    return checked_kernels("quantized", lambda m: _check_quant(m), "mx.quantized_matmul")


def cpu_kernels_for(x) -> ModuleType | None:
    """:func:`cpu_kernels` when ``x`` can go through them (float32, default device the CPU); else None."""
    import mlx.core as mx

    if x.dtype != mx.float32 or mx.default_device() != mx.cpu:
        return None
    return cpu_kernels()


def _build_and_load() -> ModuleType | None:
    try:
        module = _load(build())  # build() verifies a cached library's digest, rebuilding a damaged one
        _self_check(module)
        return module
    except Exception as exc:  # noqa: BLE001 - an optional speed-up must never break embedding
        why = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, OSError):
            why += f" (the cache is {cache_root()}; set LACY_MLX_CACHE to a writable folder)"
        if isinstance(exc, TypeError) and "incompatible function arguments" in str(exc):
            import nanobind  # it refused mlx.core.array: built with another nanobind ABI than MLX's

            why = (f"nanobind {nanobind.__version__} does not share the ABI MLX's Python types were built with; "
                   "install the nanobind version your MLX release uses")
    warnings.warn(f"lacy-mlx CPU kernels unavailable, using plain MLX ops (slower on CPU): {why}", stacklevel=3)
    return None


def main() -> int:
    """Build (if needed), load and check the kernels; print where they are and how long it took."""
    if platform.system() != "Linux":
        print("lacy-mlx CPU kernels: not used on this platform (Linux only)")
        return 0
    start = time.perf_counter()
    try:
        path = build()
    except Exception as exc:  # noqa: BLE001 - optional: a machine without a compiler still runs, only slower
        print(f"lacy-mlx CPU kernels not built (plain MLX ops will be used): {exc}", file=sys.stderr)
        return 0
    module = cpu_kernels()
    state = "loaded and checked" if module is not None else "built but unusable (see the warning)"
    if module is not None and quant_kernels() is None:
        state += " (the quantized matmul failed its check: see the warning)"
    print(f"lacy-mlx CPU kernels {state}: {path} ({time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
