"""GGUF files (llama.cpp, Ollama, LM Studio) to MLX folders that ``mlx_lm.load`` and lacy-mlx load.

Steps: parse the header (refuse unreadable tensor types before anything else) -> config.json
from the metadata -> tensors through MLX's GGUF reader (Q4_0/Q4_1/Q8_0 arrive as MLX affine
triples, kept quantized: no dequantize-requantize loss) -> llama.cpp names to mlx-lm names, q/k
rows back in Hugging Face order -> checked against the mlx-lm model -> written atomically with
a tokenizer rebuilt from the metadata -> optional parity check against transformers' GGUF loader.
"""
from __future__ import annotations

import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten

from lacy_mlx.tokens import LacySection, write_lacy_section

from . import call_tokens, decoder, mlx_model, writer
from .errors import ConvertError, ShapeMismatchError, UnsupportedDtypeError, VerificationError
from .gguf_arch import GGUFArch, arch_for, config_from, mlx_name, unpermute_rows
from .gguf_file import AFFINE_BITS, GROUP_SIZE, SUPPORTED, GGUFHeader, read_header
from .gguf_tokenizer import build_tokenizer, write_tokenizer_files
from .mlx_model import DTYPES, dtype_name, float_dtype
from .result import ConvertResult



def convert_gguf(
    src: Path,
    out: Path,
    *,
    dtype: str | None = None,
    dequantize: bool = False,
    quantize: int | None = None,
    group_size: int = 64,
    add_call_token: bool = False,
    verify: bool = False,
    verify_tolerance: float | None = None,
    max_shard_size: int | str = writer.DEFAULT_SHARD_BYTES,
    overwrite: bool = False,
) -> Any:
    """Convert the GGUF file ``src`` into the MLX folder ``out`` (see ``convert()``).

    Quantized tensors stay quantized unless ``dequantize`` (or ``quantize``, which re-quantizes
    from the dequantized weights). ``dtype`` applies to every float tensor, quantization scales
    and biases included; None means float32 for files with quantized tensors (GGUF's float16
    scales, kept, move logits by ~0.07 against the dequantized reference; float32 scales by
    ~1e-4) and the stored dtypes otherwise. Raises a ConvertError subclass naming the file;
    ``out`` is then untouched.
    """
    start = time.perf_counter()
    header = read_header(src)
    row = arch_for(header)
    _refuse_unreadable(header)
    if out.exists() and not overwrite:
        raise ConvertError(f"{out}: already exists; choose another --out or pass --overwrite")
    tokenizer = build_tokenizer(header)  # one that cannot be rebuilt fails here, before the weights load
    if verify:
        from .verify import require_reference

        require_reference()
    quantized = any(t.type_name in AFFINE_BITS for t in header.tensors.values())
    target = DTYPES[dtype] if dtype else (mx.float32 if quantized else None)
    weights, bits = _read_weights(header, row)
    if dequantize or quantize:
        weights, bits = _dequantize(weights, bits, target or mx.float32), {}
    weights = _cast(weights, target)
    rows = int(weights["model.embed_tokens.weight"].shape[0])
    config = config_from(header, row, rows)
    if bits:
        config["quantization"] = _quantization_config(bits)
    model = _build(config, src, set(bits))
    weights = model.sanitize(weights) if hasattr(model, "sanitize") else weights
    plan = None
    with tempfile.TemporaryDirectory(prefix="lacy-gguf-tok-") as tok_dir:
        ids = write_tokenizer_files(header, Path(tok_dir), tokenizer)
        if add_call_token:
            model, weights, plan = _add_call_tokens(model, weights, config, Path(tok_dir), src, set(bits))
        tokenizer_files = {p.name: p.read_bytes() for p in Path(tok_dir).iterdir()}
    mlx_model.load_checked(model, weights, lambda _: str(src))
    if quantize:
        config = mlx_model.quantize(model, config, quantize, group_size)
    params = dict(tree_flatten(model.parameters()))
    out_dtype = target or float_dtype(params)
    with writer.staged_folder(out, overwrite) as stage:
        for name, data in tokenizer_files.items():
            (stage / name).write_bytes(data)
        config.update(_token_config(ids))
        files = writer.save_weights(stage, params, writer.parse_size(max_shard_size))
        writer.save_config(stage, config)
        if plan is not None:
            write_lacy_section(stage, plan.lacy_section())
        del params, model, weights
        report = None
        if verify:
            from .verify import verify_gguf

            report = verify_gguf(src, stage, dtype=dtype_name(out_dtype), tolerance=verify_tolerance)
            if not report.passed:
                raise VerificationError(f"{src}: {report.describe()}; nothing was written to {out}")
    return ConvertResult(
        out=out, model_type=row.model_type, kind="decoder", source_layout="gguf", dtype=dtype_name(out_dtype),
        quantization=config.get("quantization"), num_parameters=sum(int(np.prod(t.shape)) for t in header.tensors.values()),
        files=tuple(sorted(p.name for p in out.iterdir())), verify=report,
        lacy=plan.lacy_section() if plan is not None else LacySection(),
        seconds=time.perf_counter() - start,
    )


def _add_call_tokens(model: nn.Module, weights: dict[str, mx.array], config: dict[str, Any], tok_dir: Path,
                     src: Path, quantized: set[str]) -> tuple[nn.Module, dict[str, mx.array], Any]:
    """<CALL> surgery on the GGUF's model: the rebuilt tokenizer in ``tok_dir`` gains the tokens,
    the embedding (and an untied head) new mean rows, quantized ones included."""
    plan = call_tokens.plan_tokens(tok_dir, call_tokens.embedding_rows(model))
    matrices = call_tokens.token_matrices(model)
    weights = call_tokens.grow_rows(weights, matrices, plan, model)
    if plan.rows_after != plan.rows_before:
        call_tokens.update_config(config, plan)
        model = _build(config, src, quantized)
    call_tokens.write_tokenizer(tok_dir, tok_dir, plan)
    return model, weights, plan


def _refuse_unreadable(header: GGUFHeader) -> None:
    bad = Counter(t.type_name for t in header.tensors.values() if not t.supported)
    if not bad:
        return
    example = next(t.name for t in header.tensors.values() if not t.supported)
    kinds = ", ".join(f"{n} x {k}" for k, n in bad.most_common())
    raise UnsupportedDtypeError(
        f"{header.path}: {kinds} tensors (e.g. {example}) cannot be read: MLX reads GGUF tensors of "
        f"types {', '.join(SUPPORTED)}. Re-export the model with one of those (llama.cpp: "
        "llama-quantize --allow-requantize IN.gguf OUT.gguf Q8_0, or Q4_0), or convert the original "
        "Hugging Face checkpoint; nothing was written"
    )


def _read_weights(header: GGUFHeader, row: GGUFArch) -> tuple[dict[str, mx.array], dict[str, int]]:
    """Tensors under mlx-lm names, q/k rows unpermuted; ``bits`` maps each quantized module to its bits."""
    raw = mx.load(str(header.path))
    weights: dict[str, mx.array] = {}
    bits: dict[str, int] = {}
    heads = {"q_proj": int(header.arch_value("attention.head_count"))}
    heads["k_proj"] = int(header.arch_value("attention.head_count_kv", heads["q_proj"]))
    for key, value in raw.items():
        info = header.tensors.get(key) or header.tensors.get(key.rsplit(".", 1)[0] + ".weight")
        name = mlx_name(key)
        if name is None:
            raise ShapeMismatchError(f"{header.path}: tensor {key} has no counterpart in the mlx-lm {row.model_type} model")
        if info is not None and info.type_name == "BF16" and key == info.name:
            value = _bf16(header, info)  # MLX's reader narrows BF16 to float16, which can overflow
        module, leaf = name.rsplit(".", 1)
        proj = module.rsplit(".", 1)[-1]
        if row.permuted_qk and proj in heads:
            value = unpermute_rows(value, heads[proj])
        if info is not None and info.type_name in AFFINE_BITS:
            bits[module] = AFFINE_BITS[info.type_name]
        weights[name] = value
    return weights, bits


def _bf16(header: GGUFHeader, info: Any) -> mx.array:
    count = int(np.prod(info.shape))
    data = np.memmap(header.path, dtype="<u2", mode="r", offset=info.offset, shape=(count,))
    return mx.array(np.array(data).reshape(info.shape)).view(mx.bfloat16)


def _dequantize(weights: dict[str, mx.array], bits: dict[str, int], dtype: mx.Dtype) -> dict[str, mx.array]:
    out = {k: v for k, v in weights.items() if not k.endswith((".scales", ".biases"))}
    for module, b in bits.items():
        w = weights[f"{module}.weight"]
        s, z = weights[f"{module}.scales"].astype(mx.float32), weights[f"{module}.biases"].astype(mx.float32)
        out[f"{module}.weight"] = mx.dequantize(w, s, z, group_size=GROUP_SIZE, bits=b).astype(dtype)
    return out


def _cast(weights: dict[str, mx.array], dtype: mx.Dtype | None) -> dict[str, mx.array]:
    if dtype is None:
        return weights
    return {k: v.astype(dtype) if mx.issubdtype(v.dtype, mx.floating) else v for k, v in weights.items()}


def _quantization_config(bits: dict[str, int]) -> dict[str, Any]:
    """mlx-lm's quantization entry: the commonest bit width on top, per-module entries for the rest
    (SmolLM2's file: 8-bit embedding, 4-bit layers)."""
    common = Counter(bits.values()).most_common(1)[0][0]
    entry: dict[str, Any] = {"group_size": GROUP_SIZE, "bits": common, "mode": "affine"}
    for module, b in sorted(bits.items()):
        if b != common:
            entry[module] = {"group_size": GROUP_SIZE, "bits": b}
    return entry


def _build(config: dict[str, Any], src: Path, quantized: set[str]) -> nn.Module:
    """The mlx-lm model for ``config``; the ``quantized`` modules become quantized layers with the
    config's per-module settings, as mlx_lm.load builds them."""
    model = decoder.build_model(config, str(src))
    quant = config.get("quantization")
    if quant:
        def predicate(path: str, module: nn.Module) -> Any:
            if path not in quantized or not hasattr(module, "to_quantized"):
                return False
            return quant.get(path, True)

        nn.quantize(model, group_size=quant["group_size"], bits=quant["bits"], class_predicate=predicate)
    return model


def _token_config(ids: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "bos" in ids:
        out["bos_token_id"] = ids["bos"]
    ends = ids.get("end_of_turn") or []
    if ends:
        out["eos_token_id"] = ends if len(ends) > 1 else ends[0]
    return out
