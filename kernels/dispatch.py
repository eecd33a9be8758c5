"""Pick and run the fused gate kernel for this device (Metal, CUDA, or none: the reference ops).

:func:`gate_stats` is the gate the decoder runs: the fused kernel for the default device, else
``lacy_mlx.gate.gate_stats_reference`` (its plain-MLX twin, same outputs). The kernel is chosen
once per process by :func:`fused_gate_for_device`, which returns a callable with the reference's
signature or ``None``. Kernel objects are built on first use and kept; everything that depends only on
(dtype, shape, call_id) is computed once per key, so a call does one dict lookup and one kernel
call. Sizes travel in a small int32 ``meta`` array, so one compiled kernel per dtype serves every
vocabulary and batch size (no per-shape JIT compile in the decode loop).
"""
from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass

import mlx.core as mx

from lacy_mlx.gate import GateStats, gate_params, gate_stats_reference
from . import kernel_source  # relative: this folder is `kernels` in a checkout, `lacy_mlx.kernels` installed


@dataclass(frozen=True)
class KernelDecl:
    """Names a kernel body is called with; tests check each source declares exactly these."""

    source: str  # file in lacy_mlx.kernels
    section: str  # "// @@<section>" part of that file holding the body
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    template: tuple[str, ...]


CUDA_GATE = KernelDecl(
    "gate.cu", "gate", ("logits", "params", "meta", "workspace"),
    ("entropy", "p_call", "p_top", "token", "decision"), ("T", "NT"),
)
METAL_PARTIAL = KernelDecl("gate.metal", "gate_partial", ("logits", "meta"), ("partials",), ("T", "NT"))
METAL_FINAL = KernelDecl(
    "gate.metal", "gate_final", ("logits", "params", "meta", "partials"),
    ("entropy", "p_call", "p_top", "token", "decision"), ("T", "NT"),
)
DECLS = (CUDA_GATE, METAL_PARTIAL, METAL_FINAL)

OUTPUT_DTYPES = [mx.float32, mx.float32, mx.float32, mx.int32, mx.bool_]
KERNEL_DTYPES = (mx.float32, mx.float16, mx.bfloat16)
NT = 256  # threads per block / threadgroup
MIN_CHUNK = 2048  # fewer logits per block than this and the combine costs more than it saves
# Workspaces (partials + counters) a CUDA plan rotates through: more than the nodes MLX puts
# in one CUDA graph (< 255), so two kernels that may run concurrently never share a counter.
WORKSPACE_RING = 512


def split_sections(text: str) -> dict[str, str]:
    """Split a kernel file into its ``// @@name`` sections (text before the first is dropped)."""
    sections: dict[str, str] = {}
    name = None
    lines: list[str] = []
    for line in text.splitlines(keepends=True):
        if line.startswith("// @@"):
            if name is not None:
                sections[name] = "".join(lines)
            name, lines = line[5:].strip(), []
        elif name is not None:
            lines.append(line)
    if name is not None:
        sections[name] = "".join(lines)
    return sections


def compact(code: str) -> str:
    """Drop comment-only and blank lines: MLX re-assembles the kernel text on every call."""
    keep = [ln for ln in code.splitlines() if ln.strip() and not ln.lstrip().startswith("//")]
    return "\n".join(keep) + "\n"


def plan_split(rows: int, vocab: int, target_blocks: int, min_chunk: int = MIN_CHUNK) -> tuple[int, int]:
    """(blocks per row, logits per block) so that about ``target_blocks`` blocks read the batch."""
    split = max(1, min(math.ceil(target_blocks / rows), math.ceil(vocab / min_chunk)))
    chunk = math.ceil(math.ceil(vocab / split) / 256) * 256  # multiple of 256: 16-byte aligned chunks
    return math.ceil(vocab / chunk), chunk


@dataclass
class _Plan:
    """Everything a call needs for one (dtype, shape, call_id), built once."""

    rows: int
    split: int
    meta: mx.array
    template: list
    grid: tuple
    output_shapes: list
    workspaces: list
    turn: int = 0


def _rows_vocab(logits: mx.array) -> tuple[int, int] | None:
    if logits.ndim == 1:
        return 1, logits.shape[0]
    if logits.ndim == 2 and logits.shape[0] > 0:
        return logits.shape[0], logits.shape[1]
    return None


def _make_meta(vocab: int, split: int, chunk: int, call_id: int) -> mx.array:
    meta = mx.array([vocab, split, chunk, call_id], dtype=mx.int32)
    mx.eval(meta)
    return meta


class _FusedGate:
    """What both fused gates share: one plan per (dtype, shape, call_id), built on first use.

    Subclasses set ``target_blocks``, build their kernels in ``__init__`` and implement
    ``_workspaces(rows, split)`` and ``_launch(logits, params, plan) -> 5 outputs``.
    """

    target_blocks: int
    min_chunk = MIN_CHUNK

    def __init__(self) -> None:
        self._plans: dict = {}

    def __call__(self, logits: mx.array, call_id: int, params: mx.array) -> GateStats:
        plan = self._plans.get((logits.dtype, logits.shape, call_id))
        if plan is None:
            plan = self._plan(logits, call_id)
            if plan is None:
                return gate_stats_reference(logits, call_id, params)
        if params.dtype != mx.float32:
            params = params.astype(mx.float32)
        return GateStats(*self._launch(logits, params, plan))

    def _plan(self, logits: mx.array, call_id: int) -> _Plan | None:
        shape = _rows_vocab(logits)
        if shape is None or logits.dtype not in KERNEL_DTYPES:
            return None
        rows, vocab = shape
        split, chunk = plan_split(rows, vocab, self.target_blocks, self.min_chunk)
        plan = _Plan(
            rows, split, _make_meta(vocab, split, chunk, call_id),
            [("T", logits.dtype), ("NT", NT)], (rows * split * NT, 1, 1),
            [(rows,)] * 5, self._workspaces(rows, split),
        )
        self._plans[(logits.dtype, logits.shape, call_id)] = plan
        return plan

    def _workspaces(self, rows: int, split: int) -> list:
        return []

    def _launch(self, logits: mx.array, params: mx.array, plan: _Plan) -> list:
        raise NotImplementedError


class CudaGate(_FusedGate):
    """Fused gate through ``mx.fast.cuda_kernel``: one launch per call, rows split across blocks."""

    target_blocks = 528  # about 4 blocks per SM on a 132-SM H100/H200

    def __init__(self) -> None:
        super().__init__()
        parts = split_sections(kernel_source(CUDA_GATE.source))
        self._kernel = mx.fast.cuda_kernel(
            name="lacy_mlx_gate", input_names=list(CUDA_GATE.inputs),
            output_names=list(CUDA_GATE.outputs), source=compact(parts[CUDA_GATE.section]),
            header=compact(parts["header"]), ensure_row_contiguous=True,
        )

    def _workspaces(self, rows: int, split: int) -> list:
        # partials (4 words per block) then one uint32 counter per row; counters start at 0
        size = rows * split * 4 + rows if split > 1 else 1
        count = WORKSPACE_RING if split > 1 else 1
        workspaces = [mx.zeros((size,), dtype=mx.float32) for _ in range(count)]
        mx.eval(workspaces)
        return workspaces

    def _launch(self, logits: mx.array, params: mx.array, plan: _Plan) -> list:
        ws = plan.workspaces[plan.turn]
        plan.turn = (plan.turn + 1) % len(plan.workspaces)
        return self._kernel(
            inputs=[logits, params, plan.meta, ws], template=plan.template, grid=plan.grid,
            threadgroup=(NT, 1, 1), output_shapes=plan.output_shapes, output_dtypes=OUTPUT_DTYPES,
        )


class MetalGate(_FusedGate):
    """Fused gate through ``mx.fast.metal_kernel``; a split row takes two dispatches (see gate.metal)."""

    target_blocks = 128  # threadgroups in flight on an M-series GPU, roughly

    def __init__(self) -> None:
        super().__init__()
        parts = split_sections(kernel_source("gate.metal"))
        self._partial = self._build("lacy_mlx_gate_partial", METAL_PARTIAL, parts)
        self._final = self._build("lacy_mlx_gate_final", METAL_FINAL, parts)
        self._dummy = mx.zeros((4,), dtype=mx.float32)

    @staticmethod
    def _build(name: str, decl: KernelDecl, parts: dict[str, str]):
        return mx.fast.metal_kernel(
            name=name, input_names=list(decl.inputs), output_names=list(decl.outputs),
            source=compact(parts[decl.section]), header=compact(parts["header"]),
            ensure_row_contiguous=True,
        )

    def _launch(self, logits: mx.array, params: mx.array, plan: _Plan) -> list:
        partials = self._dummy
        if plan.split > 1:
            partials = self._partial(
                inputs=[logits, plan.meta], template=plan.template, grid=plan.grid,
                threadgroup=(NT, 1, 1), output_shapes=[(plan.rows * plan.split * 4,)],
                output_dtypes=[mx.float32],
            )[0]
        return self._final(
            inputs=[logits, params, plan.meta, partials], template=plan.template,
            grid=(plan.rows * NT, 1, 1), threadgroup=(NT, 1, 1),
            output_shapes=plan.output_shapes, output_dtypes=OUTPUT_DTYPES,
        )


def _cuda_available() -> bool:
    cuda = getattr(mx, "cuda", None)
    return bool(cuda is not None and cuda.is_available())


def _on_gpu() -> bool:
    return mx.default_device() == mx.gpu


def self_check(gate) -> bool:
    """Run ``gate`` once on known bfloat16 rows (split rows, -inf entries, a tie) against the reference."""
    x = mx.sin(mx.arange(2 * 5000, dtype=mx.float32).reshape(2, 5000) * 0.37) * 4
    x = mx.where(mx.arange(5000) % 7 == 3, -mx.inf, x).astype(mx.bfloat16)
    params = gate_params("either", 1.0, 0.1)
    got, want = gate(x, 11, params), gate_stats_reference(x, 11, params)
    return bool(
        mx.array_equal(got.token, want.token).item()
        and mx.allclose(got.entropy, want.entropy, rtol=1e-3, atol=1e-4).item()
        and mx.allclose(got.p_call, want.p_call, rtol=1e-3, atol=1e-6).item()
    )


class CpuGate:
    """The gate as one task of the CPU extension (``kernels/cpu_gate.cpp``) for float32 logits;
    other dtypes and shapes take the reference ops."""

    def __init__(self, module) -> None:
        self._module = module

    def __call__(self, logits: mx.array, call_id: int, params: mx.array) -> GateStats:
        if logits.dtype != mx.float32 or _rows_vocab(logits) is None or mx.default_device() != mx.cpu:
            return gate_stats_reference(logits, call_id, params)
        if params.dtype != mx.float32:
            params = params.astype(mx.float32)
        return GateStats(*self._module.gate_stats(logits, int(call_id), params))


def _check_cpu_gate(module) -> None:
    """The CPU gate against the reference: split-free rows with -inf, NaN and +inf entries, a tie, an
    all-masked row, <CALL> inside and outside the vocabulary, every mode."""
    x = mx.sin(mx.arange(3 * 5003, dtype=mx.float32).reshape(3, 5003) * 0.37) * 4
    x = mx.where(mx.arange(5003) % 7 == 3, -mx.inf, x)
    x = mx.concatenate([x, mx.full((1, 5003), -mx.inf)])
    x[1, 11] = mx.nan
    x[2, 17] = mx.inf
    x[0, 5] = x[0, 900] = 9.0  # a tie for the top
    gate = CpuGate(module)
    for mode, call_id in (("either", 11), ("call", 100), ("entropy", -1), ("off", 5003)):
        params = gate_params(mode, 1.0, 0.1)
        got, want = gate(x, call_id, params), gate_stats_reference(x, call_id, params)
        same = (mx.array_equal(got.token, want.token).item() and mx.array_equal(got.decision, want.decision).item()
                and all(mx.allclose(getattr(got, f), getattr(want, f), rtol=1e-5, atol=1e-6).item()
                        for f in ("entropy", "p_call", "p_top")))
        if not same:
            raise ValueError(f"the CPU gate disagrees with the reference ops (mode {mode}, call id {call_id})")


def _cpu_gate():
    from .cpu_build import checked_kernels

    module = checked_kernels("gate", _check_cpu_gate, "the reference ops")
    return None if module is None else CpuGate(module)


def fused_gate_for_device():
    """The fused gate for the default device: Metal, then CUDA, on the CPU the extension's task;
    ``None`` means use the reference ops.

    The kernel is built and checked once against the reference (one JIT compile); if that fails,
    a warning says why and the reference ops are used, so a kernel problem never stops generation.
    """
    if not _on_gpu():
        return _cpu_gate() if mx.default_device() == mx.cpu else None
    for available, make in ((mx.metal.is_available, MetalGate), (_cuda_available, CudaGate)):
        if not available():
            continue
        try:
            gate = make()
            if self_check(gate):
                return gate
            reason = "its results differ from the reference ops"
        except Exception as exc:  # a JIT compile error surfaces here, at first evaluation
            reason = f"{type(exc).__name__}: {exc}"
        warnings.warn(f"lacy-mlx: fused gate {make.__name__} disabled ({reason}); "
                      "using the reference ops (set LACY_GATE_REFERENCE=1 to skip the kernel)")
        return None
    return None


def gate_stats(logits: mx.array, call_id: int, params: mx.array) -> GateStats:
    """Gate statistics through the fastest path for the default device (same outputs as the reference)."""
    fused = _fused_impl()
    if fused is not None:
        return fused(logits, call_id, params)
    return gate_stats_reference(logits, call_id, params)


_FUSED: list = []  # [callable or None], filled once


def _fused_impl():
    """The fused kernel entry point for this device, or None; looked up once per process."""
    if not _FUSED:
        forced = os.environ.get("LACY_GATE_REFERENCE", "") not in ("", "0")
        _FUSED.append(None if forced else fused_gate_for_device())
    return _FUSED[0]
