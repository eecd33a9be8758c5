"""Where one decode step and one prefill of the default model (SmolLM2-135M) spend their time on the CPU.

Times the whole step (``model(x, cache)`` evaluated) and each kind of op alone, with the
model's own weights and shapes, every kind repeated as often as the model runs it (30 layers)
inside one evaluated graph: the projections, the tied 49152-wide head, RMSNorm, rope,
attention, the KV-cache update, the SwiGLU elementwise ops, and the Python time to build the
step's graph, and the gate run on the step's logits. With ``--kernels`` a decode step runs each layer
as one fused task (``kernels/cpu_block.cpp``), timed as ``fused_blocks``; the per-op rows then show
what it replaced. What the parts do not explain is MLX's per-op scheduling. ``--model`` takes any
MLX folder (``lacy-mlx convert X.gguf --out DIR``, with and without ``--dequantize``); the
numbers are medians of ``--repeats`` runs, printed as a table and one JSON line.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable

import mlx.core as mx
import mlx.nn as nn
from mlx_lm import load
from mlx_lm.models.cache import make_prompt_cache

from lacy_mlx.platform import blas_threads, openblas_preloaded
from lacy_mlx.gate import gate_params
from lacy_mlx.kernels.dispatch import gate_stats
from lacy_mlx.runtime.cpu_layers import _block_plan, accelerate_layers, attention, silu_mul
from lacy_mlx.runtime.quantized import accelerate, set_threads


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``mx.eval(fn())`` in ms, after one warm-up."""
    mx.eval(fn())
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        mx.eval(fn())
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def _filled_cache(model: nn.Module, context: int) -> list:
    cache = make_prompt_cache(model)
    if context:
        model(mx.zeros((1, context), dtype=mx.int32), cache=cache)
        mx.eval([c.state for c in cache])
    return cache


def profile(model: nn.Module, *, tokens: int, context: int, repeats: int, kernels: bool = False) -> dict[str, float]:
    """ms per kind of op for a forward pass of ``tokens`` new tokens after ``context`` cached ones
    (``kernels``: attention and SwiGLU timed through lacy-mlx's CPU kernels, as the switched model runs them)."""
    inner = model.model
    layers = inner.layers
    attn0 = layers[0].self_attn
    h_dim = layers[0].input_layernorm.weight.shape[0]
    head_dim = h_dim // attn0.n_heads
    x = mx.random.normal((1, tokens, h_dim)) * 0.1
    mx.eval(x)
    out: dict[str, float] = {}

    def step():  # the whole forward, cache rolled back to ``context`` each time
        cache = _filled_cache(model, context) if context else make_prompt_cache(model)
        t0 = time.perf_counter()
        y = model(mx.zeros((1, tokens), dtype=mx.int32), cache=cache)[:, -1, :]
        build = time.perf_counter() - t0
        mx.eval(y)
        return build, time.perf_counter() - t0

    step()
    runs = [step() for _ in range(repeats)]
    out["step"] = statistics.median(r[1] for r in runs) * 1e3
    out["python_graph_build"] = statistics.median(r[0] for r in runs) * 1e3
    lin = {n: [getattr(l.self_attn, n) for l in layers] for n in ("q_proj", "k_proj", "v_proj", "o_proj")}
    lin.update({n: [getattr(l.mlp, n) for l in layers] for n in ("gate_proj", "up_proj", "down_proj")})
    xi = mx.random.normal((1, tokens, 1536)) * 0.1
    for name, mods in lin.items():
        src = xi if name == "down_proj" else x
        out[f"matmul_{name}"] = median_ms(lambda m=mods, s=src: [f(s) for f in m], repeats)
    out["lm_head_last_token"] = median_ms(lambda: inner.embed_tokens.as_linear(x[:, -1:]), repeats)
    norms = [l.input_layernorm for l in layers] + [l.post_attention_layernorm for l in layers] + [inner.norm]
    out["rms_norm"] = median_ms(lambda: [n(x) for n in norms], repeats)
    q = mx.random.normal((1, attn0.n_heads, tokens, head_dim))
    k = mx.random.normal((1, attn0.n_kv_heads, tokens, head_dim))
    mx.eval(q, k)
    out["rope"] = median_ms(lambda: [(l.self_attn.rope(q, offset=context), l.self_attn.rope(k, offset=context))
                                     for l in layers], repeats)
    kv = mx.random.normal((1, attn0.n_kv_heads, context + tokens, head_dim))
    mask = "causal" if tokens > 1 else None
    sdpa = (lambda: attention(q, kv, kv, scale=attn0.scale, mask=mask)) if kernels else (
        lambda: mx.fast.scaled_dot_product_attention(q, kv, kv, scale=attn0.scale, mask=mask))
    out["sdpa"] = median_ms(lambda: [sdpa() for _ in layers], repeats)

    def cache_update():
        cache = _filled_cache(model, context)
        return [c.update_and_fetch(k, k) for c in cache]

    base = median_ms(lambda: [c.state for c in _filled_cache(model, context)], repeats)
    out["kv_cache_update"] = max(0.0, median_ms(cache_update, repeats) - base)
    g = mx.random.normal((1, tokens, 1536))
    mx.eval(g)
    swiglu = (lambda: silu_mul(g, g)) if kernels else (lambda: nn.silu(g) * g)
    out["swiglu_elementwise"] = median_ms(lambda: [swiglu() for _ in layers], repeats)
    out["residual_adds"] = median_ms(lambda: [x + x for _ in range(2 * len(layers))], repeats)
    out["embedding_lookup"] = median_ms(lambda: inner.embed_tokens(mx.zeros((1, tokens), dtype=mx.int32)), repeats)
    logits = mx.random.normal((1, inner.embed_tokens.weight.shape[0])) * 3
    mx.eval(logits)
    out["gate_after_step"] = median_ms(lambda: list(vars(gate_stats(logits, -1, gate_params("entropy", 3.0, 0.5))).values()),
                                       repeats)
    skip = {"step", "python_graph_build", "gate_after_step"}
    if kernels and tokens == 1 and _block_plan(layers[0]) is not None:
        # a decode step runs each layer as one fused task: the per-op rows above are what it replaced
        cache = _filled_cache(model, context)
        x1 = x[:, :1]

        def blocks():
            h = x1
            for layer, c in zip(layers, cache):
                h = layer(h, None, c)
                c.offset -= 1  # the same position every time
            return h

        out["fused_blocks"] = median_ms(blocks, repeats)
        parts = sum(out[k2] for k2 in ("fused_blocks", "lm_head_last_token", "embedding_lookup")) + out["rms_norm"] / len(norms)
    else:
        parts = sum(v for k2, v in out.items() if k2 not in skip)
    out["unexplained"] = out["step"] - parts
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="an MLX model folder")
    p.add_argument("--context", type=int, default=200, help="cached tokens before the decode step (not a multiple of 256: mlx-lm grows its cache then)")
    p.add_argument("--prefill", type=int, default=256, help="prompt tokens of the prefill profiled (0: decode only)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--kernels", action="store_true", help="quantized layers, norms, rope, attention and SwiGLU on "
                   "lacy-mlx's CPU kernels (as the runtime)")
    p.add_argument("--threads", type=int, default=1, help="BLAS and kernel threads")
    args = p.parse_args(argv)
    model, _ = load(args.model)
    if args.kernels:
        accelerate(model)
        accelerate_layers(model)
    set_threads(args.threads)
    with blas_threads(args.threads):
        res = {"decode": profile(model, tokens=1, context=args.context, repeats=args.repeats, kernels=args.kernels),
               "prefill": profile(model, tokens=args.prefill, context=0, repeats=max(3, args.repeats // 2),
                                  kernels=args.kernels)
               if args.prefill else {}}
    print(f"{args.model}: kernels {args.kernels}, threads {args.threads}, device {mx.default_device()}, OpenBLAS preloaded {openblas_preloaded()}, "
          f"decode after {args.context} tokens, prefill of {args.prefill}")
    print(f"{'part':>22} {'decode ms':>10} {'prefill ms':>11}")
    for key in res["decode"]:
        print(f"{key:>22} {res['decode'][key]:10.2f} {res['prefill'].get(key, float('nan')):11.1f}")
    print(json.dumps({"benchmark": "profile_cpu", "model": args.model, "openblas": openblas_preloaded(),
                      "kernels": args.kernels, "threads": args.threads, "context": args.context, "prefill_tokens": args.prefill,
                      **{k: {n: round(v, 3) for n, v in d.items()} for k, d in res.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
