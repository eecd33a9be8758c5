"""Microseconds per call of the entropy gate: fused kernel vs unfused ops vs mx.compile'd ops vs a
lone ``mx.max`` over the same rows (the cheapest one-read reduction MLX can do: the floor).

Each timing builds many calls with distinct inputs into ONE graph and evaluates it once, so a
per-call sync does not hide the kernel; the median of several such runs is reported. For the
fused kernel and ``mx.max`` it also splits the time into graph building (Python + op creation)
and evaluation, to show where fixed per-call cost goes. Last, the gate's share of a decode step
of a SmolLM-135M-shaped llama (random weights, mlx-lm's architecture; 194M at vocab 151936).

    python benchmarks/gate.py                    # reduced grid (CPU: ops rows only, ~2 min)
    python benchmarks/gate.py --full --json out.json
"""
from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time

import mlx.core as mx

from lacy_mlx.gate import gate_params, gate_stats_reference
from lacy_mlx.kernels.dispatch import fused_gate_for_device

CALL_ID = 7
PARAMS = gate_params("either", 2.5, 0.2)
DTYPES = {"fp32": mx.float32, "bf16": mx.bfloat16}
FULL_GRID = ([32000, 49152, 151936, 256000], [1, 8, 64])
SMALL_GRID = ([32000, 151936], [1, 8])


def _arrays(stats) -> tuple:
    """The five outputs as a plain tuple (dataclasses.astuple would deep-copy each array: an op)."""
    return stats.entropy, stats.p_call, stats.p_top, stats.token, stats.decision


def _inputs(rows: int, vocab: int, dtype, budget_bytes: int, max_calls: int) -> list[mx.array]:
    """Distinct logits arrays, as many as fit the byte budget (at least 4), all materialised."""
    per = rows * vocab * dtype.size
    count = max(4, min(max_calls, budget_bytes // per))
    xs = [(mx.random.normal((rows, vocab)) * 3).astype(dtype) for _ in range(count)]
    mx.eval(xs)
    return xs


def _time_graph(fn, xs: list[mx.array], repeats: int) -> dict:
    """Median microseconds per call: total, graph building only, and evaluation only."""
    mx.eval(fn(xs[0]))  # compile / JIT outside the timing
    total, build = [], []
    gc.collect()
    gc.disable()  # as timeit does: a collection inside the loop would land on one method only
    for _ in range(repeats):
        mx.synchronize()
        t0 = time.perf_counter()
        outs = [fn(x) for x in xs]
        t1 = time.perf_counter()
        mx.eval(outs)
        mx.synchronize()
        t2 = time.perf_counter()
        total.append((t2 - t0) / len(xs) * 1e6)
        build.append((t1 - t0) / len(xs) * 1e6)
    gc.enable()
    tot, bld = statistics.median(total), statistics.median(build)
    return {"us": tot, "build_us": bld, "eval_us": tot - bld}


def _methods(fused, variants: list[str]) -> dict:
    def reference(x):
        return _arrays(gate_stats_reference(x, CALL_ID, PARAMS))

    compiled = mx.compile(lambda x, p: _arrays(gate_stats_reference(x, CALL_ID, p)))
    methods = {
        "max": lambda x: mx.max(x, axis=-1),
        "unfused": reference,
        "compiled": lambda x: compiled(x, PARAMS),
    }
    if fused is not None:
        methods["fused"] = lambda x: _arrays(fused(x, CALL_ID, PARAMS))
        for spec in variants:  # same kernel, other splits: "BLOCKS/MIN_CHUNK"
            blocks, chunk = (int(v) for v in spec.split("/"))
            gate = type(fused)()
            gate.target_blocks, gate.min_chunk = blocks, chunk
            methods[f"fused@{spec}"] = lambda x, g=gate: _arrays(g(x, CALL_ID, PARAMS))
    return methods


def bench_grid(vocabs, batches, repeats: int, budget: int, max_calls: int,
               variants: list[str]) -> list[dict]:
    fused = fused_gate_for_device()
    methods = _methods(fused, variants)
    rows = []
    for dname, dtype in DTYPES.items():
        for vocab in vocabs:
            for batch in batches:
                xs = _inputs(batch, vocab, dtype, budget, max_calls)
                row = {"dtype": dname, "V": vocab, "B": batch, "calls": len(xs)}
                for name, fn in methods.items():
                    t = _time_graph(fn, xs, repeats)
                    row[name] = round(t["us"], 2)
                    if name in ("fused", "max"):
                        row[f"{name}_build"] = round(t["build_us"], 2)
                row["GB/s_fused"] = (
                    round(batch * vocab * dtype.size / row["fused"] / 1e3, 1) if "fused" in row else None
                )
                rows.append(row)
                print(_format_row(row), flush=True)
                del xs
                mx.clear_cache()
    return rows


def _format_row(row: dict) -> str:
    cells = [f"{row['dtype']:>4} V={row['V']:>6} B={row['B']:>2}"]
    for name in ("fused", "max", "compiled", "unfused"):
        if name in row:
            cells.append(f"{name} {row[name]:9.2f}")
    cells += [f"{k} {v:.2f}" for k, v in row.items() if k.startswith("fused@")]
    if "fused" in row:
        cells.append(f"fused/max {row['fused'] / row['max']:5.2f}x")
        cells.append(f"unfused/fused {row['unfused'] / row['fused']:6.1f}x")
        cells.append(f"build f/m {row['fused_build']:.1f}/{row['max_build']:.1f}")
    return "  ".join(cells)


def bench_decode(steps: int, vocab: int) -> dict:
    """Per-token time of a ~135M llama decode step with argmax, the reference gate, the fused gate."""
    from mlx_lm.models import llama
    from mlx_lm.models.cache import make_prompt_cache

    args = llama.ModelArgs(
        model_type="llama", hidden_size=576, num_hidden_layers=30, intermediate_size=1536,
        num_attention_heads=9, num_key_value_heads=3, rms_norm_eps=1e-5, vocab_size=vocab,
    )
    model = llama.Model(args)
    model.set_dtype(mx.bfloat16)
    mx.eval(model.parameters())
    fused = fused_gate_for_device()
    heads = {"argmax": None, "reference_gate": gate_stats_reference}
    if fused is not None:
        heads["fused_gate"] = fused
    result = {"params_M": round(sum(v.size for _, v in _leaves(model)) / 1e6, 1), "vocab": vocab}
    for name, gate in heads.items():
        cache = make_prompt_cache(model)
        tok = mx.array([[1]])
        mx.eval(model(tok, cache=cache))
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            logits = model(tok, cache=cache)[:, -1, :]
            if gate is None:
                nxt = mx.argmax(logits, axis=-1)
                mx.eval(nxt)
            else:
                stats = gate(logits, CALL_ID, PARAMS)
                nxt = stats.token
                mx.eval(nxt, stats.decision, stats.entropy, stats.p_call)
            times.append(time.perf_counter() - t0)
            tok = nxt.reshape(1, 1).astype(mx.int32)
        result[f"{name}_ms"] = round(statistics.median(times) * 1e3, 3)
        if gate is not None:  # the gate alone on one step's logits, synced like a decode step
            logits = mx.random.normal((1, vocab)).astype(mx.bfloat16)
            mx.eval(logits)
            alone = []
            for _ in range(steps):
                t0 = time.perf_counter()
                mx.eval(*_arrays(gate(logits, CALL_ID, PARAMS)))
                alone.append(time.perf_counter() - t0)
            result[f"{name}_alone_ms"] = round(statistics.median(alone) * 1e3, 3)
            result[f"{name}_share"] = round(result[f"{name}_alone_ms"] / result[f"{name}_ms"], 4)
    return result


def _leaves(model):
    from mlx.utils import tree_flatten

    return tree_flatten(model.parameters())


def bench_overhead(calls: int = 2000) -> dict:
    """Where a fused call's fixed cost goes: microseconds per call to build (Python + op creation)
    and to evaluate, for mx.max, the raw kernel call, and the whole gate call; plus one JIT compile."""
    from lacy_mlx.gate import GateStats
    from lacy_mlx.kernels import dispatch

    fused = fused_gate_for_device()
    if not isinstance(fused, dispatch.CudaGate):
        return {}
    x = mx.random.normal((1, 151936)).astype(mx.bfloat16)
    mx.eval(x, _arrays(fused(x, CALL_ID, PARAMS)))
    plan = fused._plans[(x.dtype, x.shape, CALL_ID)]
    kw = dict(template=plan.template, grid=plan.grid, threadgroup=(dispatch.NT, 1, 1),
              output_shapes=plan.output_shapes, output_dtypes=dispatch.OUTPUT_DTYPES)
    ring = plan.workspaces
    turn = [0]

    def raw():
        turn[0] += 1  # rotate like the gate does: concurrent kernels must not share a counter
        return fused._kernel(inputs=[x, PARAMS, plan.meta, ring[turn[0] % len(ring)]], **kw)

    def loop(fn) -> dict:
        fn()
        outs = []
        t0 = time.perf_counter()
        for _ in range(calls):
            outs.append(fn())
        t1 = time.perf_counter()
        mx.eval(outs)
        t2 = time.perf_counter()
        return {"build_us": round((t1 - t0) / calls * 1e6, 2), "eval_us": round((t2 - t1) / calls * 1e6, 2)}

    result = {"shape": "1x151936 bf16", "max": loop(lambda: mx.max(x, axis=-1)),
              "raw_kernel": loop(raw), "gate_call": loop(lambda: _arrays(fused(x, CALL_ID, PARAMS)))}
    out = raw()
    t0 = time.perf_counter()
    for _ in range(calls):
        GateStats(*out)
    result["GateStats_us"] = round((time.perf_counter() - t0) / calls * 1e6, 2)
    x16 = x.astype(mx.float16)  # float16 is not in the grid: its first call compiles (NVRTC)
    mx.eval(x16)
    t0 = time.perf_counter()
    mx.eval(_arrays(dispatch.CudaGate()(x16, CALL_ID, PARAMS)))
    result["first_call_fp16_ms"] = round((time.perf_counter() - t0) * 1e3, 1)
    t0 = time.perf_counter()
    mx.eval(_arrays(dispatch.CudaGate()(x16[:, :1000], CALL_ID, PARAMS)))
    result["new_shape_call_ms"] = round((time.perf_counter() - t0) * 1e3, 2)
    return result


def _probe() -> int:
    fused = fused_gate_for_device()
    for rows, vocab, dtype in ((1, 151936, mx.bfloat16), (64, 256000, mx.float32)):
        x = mx.random.normal((rows, vocab)).astype(dtype)
        mx.eval(x)
        for _ in range(5):
            mx.eval(mx.max(x, axis=-1))
            if fused is not None:
                mx.eval(*_arrays(fused(x, CALL_ID, PARAMS)))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="V in {32k,49k,152k,256k} x B in {1,8,64}")
    ap.add_argument("--json", help="also write the results to this file")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None, help="decode steps per variant")
    ap.add_argument("--no-decode", action="store_true")
    ap.add_argument("--variants", default="",
                    help="extra fused splits to time, e.g. 1056/2048,1056/1024 (target blocks/min chunk)")
    ap.add_argument("--probe", action="store_true",
                    help="only run a few fused and mx.max calls (for a profiler such as ncu)")
    a = ap.parse_args(argv)
    if a.probe:
        return _probe()
    on_gpu = mx.default_device() == mx.gpu
    vocabs, batches = FULL_GRID if a.full else SMALL_GRID
    repeats = a.repeats or (7 if on_gpu else 3)
    budget, max_calls = (2 << 30, 400) if on_gpu else (64 << 20, 12)
    print(f"device {mx.default_device()}  mlx {mx.__version__}  fused kernel: "
          f"{type(fused_gate_for_device()).__name__}", flush=True)
    print("microseconds per call (one graph of many calls, median); build = graph-building share",
          flush=True)
    result = {"device": str(mx.default_device()), "mlx": mx.__version__,
              "grid": bench_grid(vocabs, batches, repeats, budget, max_calls,
                                [v for v in a.variants.split(",") if v])}
    result["overhead"] = bench_overhead()
    if result["overhead"]:
        print("fixed cost:", json.dumps(result["overhead"]), flush=True)
    if not a.no_decode:
        steps = a.steps or (64 if on_gpu else 6)
        result["decode"] = bench_decode(steps, vocab=151936 if on_gpu else 49152)
        print("decode step:", json.dumps(result["decode"]), flush=True)
    line = json.dumps(result)
    print(line)
    if a.json:
        with open(a.json, "w", encoding="utf-8") as fh:
            fh.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
