"""``convert()``: a PyTorch / Hugging Face checkpoint in, an MLX model folder out.

Steps: locate config + weights -> build the MLX model the config names (any mlx-lm decoder,
resolved as mlx-lm resolves it, or lacy-mlx's BERT encoder) -> read tensors (MLX for
safetensors, torch for pickles) -> the family's exceptional renames, then the model's own
``sanitize`` -> optional <CALL> surgery on the embedding and head found on the built model ->
check every name and shape against the MLX model -> cast -> optional quantization -> write the folder atomically
(weights, config.json with its ``lacy`` section, tokenizer files) -> optional parity check,
which runs on the staged folder so a failed check also leaves nothing behind.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Literal

import mlx.core as mx
from mlx.utils import tree_flatten

from lacy_mlx.tokens import SPECIAL_TOKENS, LacySection, read_lacy_section, write_lacy_section

from . import call_tokens, decoder, encoder, mlx_model, writer
from .config_fix import normalise_config
from .errors import ConvertError, ShapeMismatchError, UnsupportedDtypeError, VerificationError
from .families import Family, family_for
from .gguf import convert_gguf
from .mlx_model import DTYPES, dtype_name, float_dtype
from .readers import Checkpoint, load_weights, locate
from .result import ConvertResult
from .verify import VerifyReport, require_reference, verify as run_verify

QUANT_BITS = (4, 8)
GROUP_SIZES = (32, 64, 128)
Dtype = Literal["float16", "bfloat16", "float32"]


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
    model = _shell(family, config, str(ckpt.config_path))
    plan = None
    if add_call_token:
        plan = call_tokens.plan_tokens(ckpt.root, call_tokens.embedding_rows(model))
        if plan.rows_after != plan.rows_before:
            model = _regrown(config, str(ckpt.config_path), plan)
    target = target or _config_dtype(config)
    model, config = _build(ckpt, family, config, model, plan, target, quantize, group_size)
    params = dict(tree_flatten(model.parameters()))
    out_dtype = target or float_dtype(params)
    section = _lacy_section(ckpt, plan)
    with writer.staged_folder(out, overwrite) as stage:
        files = _write(stage, ckpt, config, params, plan, section, max_bytes)
        del params, model
        report = None
        if verify:
            old_vocab = plan.tokenizer_len if plan else _config_rows(config, str(ckpt.config_path))
            report = run_verify(ckpt, family.kind, stage, dtype=dtype_name(out_dtype), bits=quantize,
                                old_vocab=old_vocab, tolerance=verify_tolerance)
            if not report.passed:
                raise VerificationError(f"{ckpt.root}: {report.describe()}; nothing was written to {out}")
    return ConvertResult(
        out=out, model_type=family.model_type, kind=family.kind, source_layout=ckpt.layout,
        dtype=dtype_name(out_dtype),
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


def _shell(family: Family, config: dict[str, Any], cfg_path: str) -> Any:
    """The MLX model for ``config``, parameters not yet loaded (lazy, so it costs no memory)."""
    if family.kind == "encoder":
        return encoder.build_encoder(config, cfg_path)
    return decoder.build_model(config, cfg_path)


def _config_rows(config: dict[str, Any], cfg_path: str) -> int:
    """vocab_size from config.json, at the top or in a nested text config."""
    for node in [config] + [v for v in config.values() if isinstance(v, dict)]:
        if isinstance(node.get("vocab_size"), int):
            return int(node["vocab_size"])
    raise ConvertError(f"{cfg_path}: has no integer vocab_size")


def _regrown(config: dict[str, Any], cfg_path: str, plan: call_tokens.TokenPlan) -> Any:
    """The decoder rebuilt for the grown vocabulary (``config`` is updated in place)."""
    call_tokens.update_config(config, plan)
    model = decoder.build_model(config, cfg_path)
    if call_tokens.embedding_rows(model) != plan.rows_after:
        raise ConvertError(
            f"{cfg_path}: no *vocab_size key holding {plan.rows_before} sizes the mlx-lm "
            f"{decoder.mlx_module(model)} model's embedding, so <CALL> rows cannot be added"
        )
    return model


def _build(ckpt: Checkpoint, family: Family, config: dict[str, Any], model: Any,
           plan: call_tokens.TokenPlan | None, target: mx.Dtype | None, bits: int | None,
           group_size: int) -> tuple[Any, dict[str, Any]]:
    """Load, rename, grow, check, cast and quantize: the MLX model ready to save."""
    keep32 = family.kind == "decoder" and decoder.keeps_some_float32(model)
    cast_to = None if keep32 else target
    if family.kind == "encoder":
        weights = family.rename(load_weights(ckpt, cast_to=cast_to))
    else:
        model, weights = _decoder_weights(ckpt, family, config, model, cast_to)
    if plan is not None:  # after sanitize, which may tie or untie the head
        weights = _grow(ckpt, weights, model, plan)
    mlx_model.load_checked(model, weights, ckpt.file_of)
    del weights
    if target is not None:
        mlx_model.cast(model, target)
    if bits is not None:
        config = mlx_model.quantize(model, config, bits, group_size)
    return model, config


def _decoder_weights(ckpt: Checkpoint, family: Family, config: dict[str, Any], model: Any,
                     cast_to: mx.Dtype | None) -> tuple[Any, dict[str, mx.array]]:
    """The checkpoint's tensors under the model's names (and the model, rebuilt if read twice)."""
    weights = decoder.mlx_names(model, family, load_weights(ckpt, cast_to=cast_to))
    if ckpt.layout == "safetensors" or mlx_model.names_fit(model, weights):
        return model, weights
    # maybe a transformers-5 in-memory state dict: read it again in the Hub layout, into a
    # fresh model (sanitize may have changed the first one, e.g. dropped its head)
    del weights
    model = decoder.build_model(config, str(ckpt.config_path))
    return model, decoder.mlx_names(model, family, load_weights(ckpt, cast_to=cast_to, hub_layout=True))


def _grow(ckpt: Checkpoint, weights: dict[str, mx.array], model: Any,
          plan: call_tokens.TokenPlan) -> dict[str, mx.array]:
    matrices = call_tokens.token_matrices(model)
    rows = weights[matrices.embed].shape[0] if matrices.embed in weights else None
    if rows != plan.rows_before:
        raise ShapeMismatchError(
            f"{ckpt.file_of(matrices.embed)}: the token embedding {matrices.embed} has {rows} rows but "
            f"config.json says {plan.rows_before}"
        )
    return call_tokens.grow_rows(weights, matrices, plan, model)


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
