"""``convert()``: a PyTorch / Hugging Face checkpoint in, an MLX model folder out.

Steps: locate config + weights -> pick the family -> read tensors (MLX for safetensors, torch
for pickles) -> rename to the MLX model's names -> optional <CALL> surgery -> check every name
and shape against the MLX model -> cast -> optional quantization -> write the folder atomically
(weights, config.json with its ``lacy`` section, tokenizer files) -> optional parity check,
which runs on the staged folder so a failed check also leaves nothing behind.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import mlx.core as mx
from mlx.utils import tree_flatten

from lacy_mlx.tokens import SPECIAL_TOKENS, LacySection, read_lacy_section, write_lacy_section

from . import call_tokens, decoder, encoder, mlx_model, writer
from .config_fix import normalise_config
from .errors import ConvertError, ShapeMismatchError, UnsupportedDtypeError, VerificationError
from .families import Family, family_for, get_path
from .readers import Checkpoint, load_weights, locate
from .verify import VerifyReport, require_reference, verify as run_verify

DTYPES = {"float16": mx.float16, "bfloat16": mx.bfloat16, "float32": mx.float32}
QUANT_BITS = (4, 8)
GROUP_SIZES = (32, 64, 128)
Dtype = Literal["float16", "bfloat16", "float32"]


@dataclass(frozen=True)
class ConvertResult:
    """What ``convert`` wrote. ``dtype`` is the output's float dtype (before any quantization)."""

    out: Path
    model_type: str
    kind: str  # "decoder" | "encoder"
    source_layout: str  # "safetensors" | "pytorch" | "state_dict"
    dtype: str
    quantization: dict[str, Any] | None
    num_parameters: int
    files: tuple[str, ...]
    lacy: LacySection
    verify: VerifyReport | None
    seconds: float


def convert(
    src: str | Path,
    out: str | Path,
    *,
    dtype: Dtype | None = None,
    quantize: int | None = None,
    group_size: int = 64,
    add_call_token: bool = False,
    verify: bool = False,
    verify_tolerance: float | None = None,
    max_shard_size: int | str = writer.DEFAULT_SHARD_BYTES,
    overwrite: bool = False,
    dequantize: bool = False,
) -> ConvertResult:
    """Convert the checkpoint at ``src`` (a folder, a .pt/.pth/.bin file beside config.json, or a
    .gguf file) into ``out``.

    ``dtype``: output float dtype; None keeps the config's ``torch_dtype``/``dtype`` when it is
    one of float16/bfloat16/float32, else the stored dtypes. ``quantize``: 4 or 8 bits of MLX
    affine quantization with ``group_size`` (as mlx-lm). ``add_call_token``: add <CALL>,
    <EVIDENCE>, </EVIDENCE> (decoders). ``verify``: compare with the PyTorch model and raise
    VerificationError above tolerance. ``out`` must not exist unless ``overwrite``. Raises a
    ConvertError subclass naming the file on bad input; ``out`` is then left untouched.
    GGUF files keep their quantized tensors unless ``dequantize`` (see ``gguf.convert_gguf``).
    """
    start = time.perf_counter()
    out = Path(out).expanduser()
    if Path(src).suffix.lower() == ".gguf":
        from .gguf import convert_gguf

        if dtype is not None and dtype not in DTYPES:
            raise UnsupportedDtypeError(f"dtype {dtype!r} is not supported; choose one of {', '.join(DTYPES)}")
        return convert_gguf(Path(src).expanduser(), out, dtype=dtype, dequantize=dequantize, quantize=quantize,
                            group_size=group_size, add_call_token=add_call_token, verify=verify,
                            verify_tolerance=verify_tolerance, max_shard_size=max_shard_size, overwrite=overwrite)
    if dequantize:
        raise ConvertError("--dequantize applies to GGUF sources (their quantized tensors); this source is not one")
    max_bytes = writer.parse_size(max_shard_size)
    ckpt = locate(src)
    family = family_for(ckpt.config, str(ckpt.config_path))
    target = _check_options(family, dtype, quantize, group_size, add_call_token, out, overwrite)
    if verify:
        require_reference()
    config = normalise_config(ckpt.config, family)
    plan = call_tokens.plan_tokens(ckpt.root, _rows(config, family)) if add_call_token else None
    if plan is not None:
        call_tokens.update_config(config, family, plan)
    target = target or _config_dtype(config)
    model, config = _build(ckpt, family, config, plan, target, quantize, group_size)
    params = dict(tree_flatten(model.parameters()))
    out_dtype = target or _float_dtype(params)
    section = _lacy_section(ckpt, plan)
    with writer.staged_folder(out, overwrite) as stage:
        files = _write(stage, ckpt, config, params, plan, section, max_bytes)
        del params, model
        report = None
        if verify:
            old_vocab = plan.tokenizer_len if plan else _rows(config, family)
            report = run_verify(ckpt, family.kind, stage, dtype=_dtype_name(out_dtype), bits=quantize,
                                old_vocab=old_vocab, tolerance=verify_tolerance)
            if not report.passed:
                raise VerificationError(f"{ckpt.root}: {report.describe()}; nothing was written to {out}")
    return ConvertResult(
        out=out, model_type=family.model_type, kind=family.kind, source_layout=ckpt.layout,
        dtype=_dtype_name(out_dtype),
        quantization=config.get("quantization"), num_parameters=_count(out, files),
        files=tuple(sorted(p.name for p in out.iterdir())), lacy=section, verify=report,
        seconds=time.perf_counter() - start,
    )


def _write(stage: Path, ckpt: Checkpoint, config: dict[str, Any], params: dict[str, mx.array],
           plan: call_tokens.TokenPlan | None, section: LacySection, max_bytes: int) -> list[str]:
    """Fill the staging folder: weights, config.json (+ lacy section), tokenizer and pooling files."""
    files = writer.save_weights(stage, params, max_bytes)
    writer.save_config(stage, config)
    if plan is not None:
        call_tokens.write_tokenizer(ckpt.root, stage, plan)
    writer.copy_side_files(ckpt.root, stage)
    if section.to_json():
        write_lacy_section(stage, section)
    return files


def _check_options(family: Family, dtype: str | None, quantize: int | None, group_size: int,
                   add_call_token: bool, out: Path, overwrite: bool) -> mx.Dtype | None:
    if dtype is not None and dtype not in DTYPES:
        raise UnsupportedDtypeError(f"dtype {dtype!r} is not supported; choose one of {', '.join(DTYPES)}")
    if quantize is not None and quantize not in QUANT_BITS:
        raise ConvertError(f"quantize={quantize!r}: MLX affine quantization here takes 4 or 8 bits")
    if quantize is not None and group_size not in GROUP_SIZES:
        raise ConvertError(f"group_size={group_size!r}: choose one of {GROUP_SIZES}")
    if add_call_token and family.kind != "decoder":
        raise ConvertError(f"--add-call-token adds tokens a decoder generates; {family.model_type} is an encoder")
    if out.exists() and not overwrite:
        raise ConvertError(f"{out}: already exists; choose another --out or pass --overwrite")
    return DTYPES[dtype] if dtype else None


def _config_dtype(config: dict[str, Any]) -> mx.Dtype | None:
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else {}
    name = config.get("torch_dtype") or config.get("dtype") or text.get("torch_dtype") or text.get("dtype")
    return DTYPES.get(name) if isinstance(name, str) else None


def _dtype_name(dtype: mx.Dtype) -> str:
    return next((k for k, v in DTYPES.items() if v == dtype), "float32")


def _float_dtype(params: dict[str, mx.array]) -> mx.Dtype:
    """The widest float dtype among the output parameters (when no dtype was asked for)."""
    floats = {v.dtype for v in params.values() if mx.issubdtype(v.dtype, mx.floating)}
    for dtype in (mx.float32, mx.bfloat16, mx.float16):
        if dtype in floats:
            return dtype
    return mx.float32


def _rows(config: dict[str, Any], family: Family) -> int:
    for dotted in family.vocab_keys:
        if isinstance(get_path(config, dotted), int):
            return int(get_path(config, dotted))
    raise ConvertError(f"config.json has no integer {family.vocab_keys[0]}")


def _build(ckpt: Checkpoint, family: Family, config: dict[str, Any], plan: call_tokens.TokenPlan | None,
           target: mx.Dtype | None, bits: int | None, group_size: int) -> tuple[Any, dict[str, Any]]:
    """Load, rename, grow, check, cast and quantize: the MLX model ready to save."""
    cfg_path = str(ckpt.config_path)
    raw = load_weights(ckpt, cast_to=None if _keeps_some_float32(family) else target)
    if family.kind == "encoder":
        model = encoder.build_encoder(config, cfg_path)
        weights = family.rename(raw)
    else:
        model = decoder.build_model(config, family, cfg_path)
        weights = decoder.mlx_names(model, family, raw)
    if plan is not None:
        rows = weights[family.embed_key].shape[0] if family.embed_key in weights else None
        if rows != plan.rows_before:
            raise ShapeMismatchError(
                f"{ckpt.file_of(family.embed_key)}: the token embedding has {rows} rows but "
                f"config.json says vocab_size {plan.rows_before}"
            )
        weights = call_tokens.grow_rows(weights, family, plan)
    mlx_model.load_checked(model, weights, ckpt.file_of)
    del raw, weights
    if target is not None:
        mlx_model.cast(model, target)
    if bits is not None:
        config = mlx_model.quantize(model, config, bits, group_size)
    return model, config


def _keeps_some_float32(family: Family) -> bool:
    """Whether the mlx-lm model keeps some parameters out of the cast (so early casting is unsafe)."""
    if family.kind != "decoder":
        return False
    import importlib

    return hasattr(importlib.import_module(f"mlx_lm.models.{family.mlx_module}").Model, "cast_predicate")


def _lacy_section(ckpt: Checkpoint, plan: call_tokens.TokenPlan | None) -> LacySection:
    """The source's lacy section, with the special-token ids the output tokenizer has."""
    base = read_lacy_section(ckpt.root)
    if plan is not None:
        return plan.lacy_section(base.gate)
    ids = _existing_ids(ckpt.root)
    if not ids:
        return base
    return LacySection(ids.get(SPECIAL_TOKENS[0]), ids.get(SPECIAL_TOKENS[1]), ids.get(SPECIAL_TOKENS[2]), base.gate)


def _existing_ids(root: Path) -> dict[str, int]:
    path = root / "tokenizer.json"
    if not path.is_file():
        return {}
    try:
        added = json.loads(path.read_text(encoding="utf-8")).get("added_tokens") or []
    except (OSError, ValueError):
        return {}
    return {t["content"]: t["id"] for t in added if t.get("content") in SPECIAL_TOKENS}


def _count(out: Path, files: list[str]) -> int:
    """Stored elements (packed quantized weights count as stored words)."""
    total = 0
    for name in files:
        for value in mx.load(str(out / name)).values():
            total += value.size
    return total
