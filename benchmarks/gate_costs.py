"""Where the fixed per-call cost of a custom CUDA kernel goes in MLX (needs MLX's CUDA backend).

Times many calls built into one graph, split into building (Python + op creation) and evaluation,
for: tiny probe kernels that differ in one thing (outputs, inputs, template arguments, source
length), mx.max, the fused gate through mx.fast.cuda_kernel, and the same gate source compiled
ahead of time to PTX (nvcc) and run through mx.fast.precompiled_cuda_kernel.

    python benchmarks/gate_costs.py [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mlx.core as mx

from lacy_mlx.gate import GateStats, gate_params, gate_stats_reference
from lacy_mlx.kernels import dispatch, kernel_source

CALLS = 2000
PARAMS = gate_params("either", 2.5, 0.2)
TINY = "if (threadIdx.x == 0 && blockIdx.x == 0) { o0[0] = x0[0]; }"


def _loop(fn, calls: int = CALLS) -> dict:
    mx.eval(fn())
    outs = []
    t0 = time.perf_counter()
    for _ in range(calls):
        outs.append(fn())
    t1 = time.perf_counter()
    mx.eval(outs)
    t2 = time.perf_counter()
    return {"build_us": round((t1 - t0) / calls * 1e6, 2), "eval_us": round((t2 - t1) / calls * 1e6, 2)}


def probe_kernels() -> dict:
    """One-thing-different custom kernels: what each costs per call."""
    x = mx.ones((1024,), dtype=mx.float32)
    mx.eval(x)
    five = [mx.float32, mx.float32, mx.float32, mx.int32, mx.bool_]
    k = lambda name, ins, outs, src, header="": mx.fast.cuda_kernel(  # noqa: E731
        name=name, input_names=ins, output_names=outs, source=src, header=header)
    base = k("probe_base", ["x0"], ["o0"], TINY)
    outs5 = k("probe_out5", ["x0"], ["o0", "o1", "o2", "o3", "o4"], TINY)
    ins4 = k("probe_in4", ["x0", "x1", "x2", "x3"], ["o0"], TINY)
    long_src = k("probe_long", ["x0"], ["o0"], TINY, header="// pad\n" * 1000)
    common = dict(grid=(32, 1, 1), threadgroup=(32, 1, 1))
    return {
        "mx.max": _loop(lambda: mx.max(x)),
        "base (1 in, 1 out)": _loop(lambda: base(inputs=[x], output_shapes=[(1,)],
                                                 output_dtypes=[mx.float32], **common)),
        "+ template T,NT": _loop(lambda: base(inputs=[x], output_shapes=[(1,)], output_dtypes=[mx.float32],
                                              template=[("T", mx.float32), ("NT", 256)], **common)),
        "5 outputs": _loop(lambda: outs5(inputs=[x], output_shapes=[(1,)] * 5, output_dtypes=five,
                                         **common)),
        "4 inputs": _loop(lambda: ins4(inputs=[x, x, x, x], output_shapes=[(1,)],
                                       output_dtypes=[mx.float32], **common)),
        "+7 KB source": _loop(lambda: long_src(inputs=[x], output_shapes=[(1,)],
                                               output_dtypes=[mx.float32], **common)),
    }


class PtxGate(dispatch.CudaGate):
    """The same gate source, compiled ahead of time with nvcc, called through precompiled_cuda_kernel."""

    CTYPES = {"float32": "float", "float16": "__half", "bfloat16": "__nv_bfloat16"}

    def __init__(self, workdir: Path, kind: str = "ptx") -> None:
        super().__init__()
        parts = dispatch.split_sections(kernel_source("gate.cu"))
        self._ptx = {}
        for tname, ctype in self.CTYPES.items():
            sig = (f"const {ctype}* logits, const float* params, const int32_t* meta, const float* workspace, "
                   "float* entropy, float* p_call, float* p_top, int32_t* token, bool* decision")
            src = ("#include <cuda_fp16.h>\n#include <cuda_bf16.h>\n#include <cstdint>\n" + parts["header"]
                   + f'extern "C" __global__ void lacy_gate_{tname}({sig}) {{\n'
                   f"  using T = {ctype};\n  constexpr int NT = {dispatch.NT};\n{parts['gate']}\n}}\n")
            cu, ptx = workdir / f"gate_{tname}.cu", workdir / f"gate_{tname}.{kind}"
            cu.write_text(src)
            subprocess.run(["nvcc", "-arch=sm_90a", "-std=c++17", f"--{kind}", str(cu), "-o", str(ptx)],
                           check=True, capture_output=True, text=True)
            self._ptx[tname] = ptx.read_bytes()

    def __call__(self, logits, call_id, params):
        plan = self._plans.get((logits.dtype, logits.shape, call_id)) or self._plan(logits, call_id)
        ws = plan.workspaces[plan.turn]
        plan.turn = (plan.turn + 1) % len(plan.workspaces)
        tname = str(logits.dtype).split(".")[-1]
        out = mx.fast.precompiled_cuda_kernel(
            name=f"lacy_gate_{tname}", compiled_source=self._ptx[tname],
            inputs=[logits, params, plan.meta, ws], output_shapes=plan.output_shapes,
            output_dtypes=dispatch.OUTPUT_DTYPES, scalars=[], grid=plan.grid,
            threadgroup=(dispatch.NT, 1, 1), ensure_row_contiguous=True,
        )
        return GateStats(*out)


def _arrays(s):
    return s.entropy, s.p_call, s.p_top, s.token, s.decision


def compare_gates() -> dict:
    jit = dispatch.CudaGate()
    result = {}
    aot = {}
    if shutil.which("nvcc"):
        for kind in ("ptx", "cubin"):
            try:
                aot[kind] = PtxGate(Path(tempfile.mkdtemp()), kind)
            except (subprocess.CalledProcessError, RuntimeError) as exc:
                result[f"{kind}_error"] = str(getattr(exc, "stderr", exc))[-2000:]
    for rows, vocab, dtype in ((1, 151936, mx.bfloat16), (8, 151936, mx.bfloat16), (64, 256000, mx.float32)):
        xs = [(mx.random.normal((rows, vocab)) * 3).astype(dtype) for _ in range(16)]
        mx.eval(xs)
        turn = [0]

        def pick():
            turn[0] += 1
            return xs[turn[0] % len(xs)]

        key = f"{rows}x{vocab} {str(dtype).split('.')[-1]}"
        row = {"mx.max": _loop(lambda: mx.max(pick(), axis=-1), 400),
               "jit gate": _loop(lambda: _arrays(jit(pick(), 7, PARAMS)), 400)}
        for kind, gate in aot.items():
            try:
                got, want = gate(xs[0], 7, PARAMS), gate_stats_reference(xs[0], 7, PARAMS)
                err = mx.max(mx.abs(got.entropy - want.entropy)).item()
                row[f"{kind} parity (entropy err, tokens equal)"] = [
                    err, mx.array_equal(got.token, want.token).item()]
                row[f"{kind} gate"] = _loop(lambda g=gate: _arrays(g(pick(), 7, PARAMS)), 400)
            except Exception as exc:  # an experiment: report, do not stop the run
                row[f"{kind}_error"] = repr(exc)[-1000:]
        result[key] = row
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    if not (getattr(mx, "cuda", None) and mx.cuda.is_available()):
        print("gate_costs: needs MLX's CUDA backend; nothing to do here")
        return 0
    result = {"probe_kernels": probe_kernels(), "gates": compare_gates()}
    for section, rows in result.items():
        print(f"== {section} (microseconds per call; one graph of many calls)")
        for name, value in rows.items():
            print(f"  {name:<42} {json.dumps(value)}")
    if a.json:
        Path(a.json).write_text(json.dumps(result) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
