"""A llama model's norms, rope, attention and SwiGLU on lacy-mlx's CPU kernels.

On the CPU, MLX 0.32 runs ``mx.fast.rms_norm``, ``mx.fast.rope`` and
``mx.fast.scaled_dot_product_attention`` as their fallbacks (6, ~15 and ~8 plain ops each, exp,
sin and cos one element at a time): a SmolLM2 decode step issued ~1,000 small ops around its
matrix products, and prefill spent as long in the attention softmax and the SiLU as in the
projections (docs/cpu-speed.md). :func:`accelerate_layers` switches a loaded model's
``nn.RMSNorm`` and ``nn.RoPE`` layers, and mlx-lm llama's ``Attention`` and ``MLP``, in place (class
only, parameters untouched) onto the one-task kernels of ``kernels/cpu_decode.cpp``. Each call
checks that it can take its input (float32, the CPU, a plain or causal mask, an integer rope
offset, an unquantized KV cache) and otherwise runs the ``mx.fast`` op, the twin the kernels
are checked against at load (and whose gradient they use).

mlx-lm llama's ``TransformerBlock`` is switched too (:class:`CpuLlamaBlock`): a decode step's
whole layer over a plain ``KVCache`` is then one task of ``kernels/cpu_block.cpp``, which writes
the new key and value row into the cache's buffer in place. That took a SmolLM2 decode step from
~500 MLX tasks to ~40 (docs/cpu-speed.md).
"""
from __future__ import annotations

import math
from types import ModuleType

import mlx.core as mx
import mlx.nn as nn
from mlx_lm.models import llama
from mlx_lm.models.base import scaled_dot_product_attention
from mlx_lm.models.cache import KVCache

from lacy_mlx.kernels.cpu_build import checked_kernels

_inv_freqs: dict[tuple[int, float], mx.array] = {}


def layer_kernels() -> ModuleType | None:
    """The kernel module once its layer ops passed their check against the ``mx.fast`` twins, else None
    (a failure warns once and leaves MLX's ops in use; the encoder's and quantized kernels are unaffected)."""
    return checked_kernels("decoder-layer", lambda m: _check(m), "mx.fast ops")


def block_kernels() -> ModuleType | None:
    """The kernel module once the fused decoder block agreed with the switched layers run one by one
    (on a small random 4/8-bit llama block over a KV cache), else None (warns once; the layers run one by one)."""
    if layer_kernels() is None:
        return None
    return checked_kernels("decoder-block", lambda m: _check_block(m), "the switched layers one by one")


def _kernels_for(*arrays: mx.array) -> ModuleType | None:
    if mx.default_device() != mx.cpu or any(a.dtype != mx.float32 for a in arrays):
        return None
    return layer_kernels()


def inv_freq(dims: int, base: float) -> mx.array:
    """Rope's inverse frequencies ``base ** -(i / (dims / 2))`` computed by MLX's own ops, as its fallback
    computes them (so the angles are bit-for-bit the same), cached per ``(dims, base)``."""
    key = (dims, float(base))
    if key not in _inv_freqs:
        half = dims // 2
        with mx.stream(mx.cpu):
            f = mx.exp(mx.arange(0, -half, -1, dtype=mx.float32) * mx.array(math.log(base) / half, dtype=mx.float32))
            mx.eval(f)
        _inv_freqs[key] = f
    return _inv_freqs[key]


def rms_norm(x: mx.array, weight: mx.array, eps: float) -> mx.array:
    """``mx.fast.rms_norm(x, weight, eps)``."""
    k = _kernels_for(x, weight)
    return k.rms_norm(x, weight, eps) if k is not None else mx.fast.rms_norm(x, weight, eps)


def silu_mul(gate: mx.array, up: mx.array) -> mx.array:
    """``nn.silu(gate) * up`` (mlx-lm's ``swiglu``)."""
    k = _kernels_for(gate, up) if gate.shape == up.shape else None
    return k.silu_mul(gate, up) if k is not None else nn.silu(gate) * up


def rope(x: mx.array, dims: int, *, traditional: bool, base: float, scale: float, offset: int | mx.array) -> mx.array:
    """``mx.fast.rope`` of ``x`` (B, H, T, D)."""
    k = _kernels_for(x) if (not traditional and isinstance(offset, int) and offset >= 0 and x.ndim == 4
                            and dims % 2 == 0) else None
    if k is None:
        return mx.fast.rope(x, dims, traditional=traditional, base=base, scale=scale, offset=offset)
    return k.rope(x, dims, base, scale, offset, inv_freq(dims, base))


def attention(q: mx.array, k: mx.array, v: mx.array, *, scale: float, mask, cache=None) -> mx.array:
    """mlx-lm's ``scaled_dot_product_attention``: the kernel for no mask or ``"causal"`` over a plain KV cache."""
    kern = _kernels_for(q, k, v) if (mask is None or (isinstance(mask, str) and mask == "causal")) else None
    if kern is None or hasattr(cache, "bits") or q.ndim != 4 or (mask == "causal" and q.shape[2] > k.shape[2]):
        return scaled_dot_product_attention(q, k, v, cache=cache, scale=scale, mask=mask)
    return kern.attention(q, k, v, scale, mask == "causal")


class CpuRMSNorm(nn.RMSNorm):
    """``nn.RMSNorm`` on :func:`rms_norm`."""

    def __call__(self, x: mx.array) -> mx.array:
        return rms_norm(x, self["weight"], self.eps)


class CpuRoPE(nn.RoPE):
    """``nn.RoPE`` on :func:`rope`."""

    def __call__(self, x: mx.array, offset: int | mx.array = 0) -> mx.array:
        return rope(x, self.dims, traditional=self.traditional, base=self.base, scale=self.scale, offset=offset)


class CpuLlamaAttention(llama.Attention):
    """mlx-lm llama's attention block with the attention itself on :func:`attention`."""

    def __call__(self, x: mx.array, mask=None, cache=None) -> mx.array:
        B, L, _ = x.shape
        heads = [(self.q_proj, self.n_heads), (self.k_proj, self.n_kv_heads), (self.v_proj, self.n_kv_heads)]
        q, k, v = (proj(x).reshape(B, L, n, -1).transpose(0, 2, 1, 3) for proj, n in heads)
        offset = cache.offset if cache is not None else 0
        q, k = self.rope(q, offset=offset), self.rope(k, offset=offset)
        if cache is not None:
            k, v = cache.update_and_fetch(k, v)
        out = attention(q, k, v, scale=self.scale, mask=mask, cache=cache)
        return self.o_proj(out.transpose(0, 2, 1, 3).reshape(B, L, -1))


class CpuLlamaMLP(llama.MLP):
    """mlx-lm llama's SwiGLU block with ``silu(gate) * up`` on :func:`silu_mul`."""

    def __call__(self, x: mx.array) -> mx.array:
        return self.down_proj(silu_mul(self.gate_proj(x), self.up_proj(x)))


_PROJECTIONS = (("self_attn", "q_proj"), ("self_attn", "k_proj"), ("self_attn", "v_proj"), ("self_attn", "o_proj"),
                ("mlp", "gate_proj"), ("mlp", "up_proj"), ("mlp", "down_proj"))


class CpuLlamaBlock(llama.TransformerBlock):
    """mlx-lm llama's decoder block; a decode step (one token, a KV cache with room) is one kernel task.

    ``kernels/cpu_block.cpp`` runs the whole block on the same row kernels as the switched layers
    and writes the token's key and value into the cache's buffers in place; anything else (a
    prompt, no cache, a quantized or rotating cache, a full buffer, layers it cannot take) runs
    the layers one by one, which grow the cache as mlx-lm does.
    """

    def __call__(self, x: mx.array, mask=None, cache=None) -> mx.array:
        plan = _block_plan(self)
        if (plan is None or mask is not None or type(cache) is not KVCache or cache.keys is None
                or x.shape != (1, 1, plan["C"]) or x.dtype != mx.float32 or cache.keys.dtype != mx.float32
                or cache.offset >= cache.keys.shape[2] or mx.default_device() != mx.cpu):
            return super().__call__(x, mask, cache)
        kern = block_kernels()
        if kern is None:
            return super().__call__(x, mask, cache)
        return _fused_step(kern, self, plan, x, cache)


def _fused_step(kern: ModuleType, block: nn.Module, plan: dict, x: mx.array, cache: KVCache) -> mx.array:
    """``block(x, None, cache)`` as one kernel task; the cache's offset advances by one."""
    weights = []
    for part, name in _PROJECTIONS:
        layer = block[part][name]
        weights += (layer["weight"], layer["scales"], layer["biases"])
    norm_in, norm_post = block.input_layernorm, block.post_attention_layernorm
    y = kern.decoder_block(x, cache.keys, cache.values, cache.offset, plan["inv_freq"], norm_in["weight"],
                           norm_post["weight"], weights, plan["quant"], plan["heads"], plan["dims"],
                           plan["rope_scale"], plan["attn_scale"], norm_in.eps, norm_post.eps)
    cache.offset += 1
    return y


def _block_plan(block: nn.Module) -> dict | None:
    """What the fused block needs that does not change between steps, found once per block; None when its
    layers are not the switched llama ones with 4/8-bit bias-free projections (then it runs layer by layer)."""
    plan = block.__dict__.get("_lacy_plan", False)
    if plan is not False:
        return plan
    from lacy_mlx.runtime.quantized import CpuQuantizedLinear, _fits

    attn, rope = block.self_attn, block.self_attn.rope
    layers = [block[part][name] for part, name in _PROJECTIONS]
    ok = (type(attn) is CpuLlamaAttention and type(block.mlp) is CpuLlamaMLP and type(rope) is CpuRoPE
          and not rope.traditional and rope.dims % 2 == 0 and rope.dims <= attn.head_dim
          and type(block.input_layernorm) is CpuRMSNorm and type(block.post_attention_layernorm) is CpuRMSNorm
          and all(type(m) is CpuQuantizedLinear and "bias" not in m and _fits(m) for m in layers))
    plan = None
    if ok:
        plan = {"C": block.input_layernorm.weight.shape[0], "heads": attn.n_heads, "dims": rope.dims,
                "rope_scale": float(rope.scale), "attn_scale": float(attn.scale),
                "inv_freq": inv_freq(rope.dims, rope.base),
                "quant": [v for m in layers for v in (m.group_size, m.bits)]}
    block.__dict__["_lacy_plan"] = plan  # not a parameter: kept out of the module's tree
    return plan


_SWAPS = ((nn.RMSNorm, CpuRMSNorm), (nn.RoPE, CpuRoPE), (llama.Attention, CpuLlamaAttention),
          (llama.MLP, CpuLlamaMLP), (llama.TransformerBlock, CpuLlamaBlock))


def accelerate_layers(model: nn.Module) -> int:
    """Switch ``model``'s norms, rope, and llama attention, MLP and decoder blocks, in place, to the CPU
    kernels; the number switched. Does nothing (0) off the CPU or without the kernels (``LACY_MLX_CPU_KERNELS=0``);
    idempotent (exact classes only: subclasses and other families keep their own code)."""
    if mx.default_device() != mx.cpu or not isinstance(model, nn.Module) or layer_kernels() is None:
        return 0
    n = 0
    for _, module in model.named_modules():
        for plain, fast in _SWAPS:
            if type(module) is plain:
                module.__class__ = fast
                n += 1
    return n


def _rel(got: mx.array, want: mx.array) -> float:
    return float(mx.max(mx.abs(got - want)) / mx.maximum(mx.max(mx.abs(want)), 1e-30))


def _check(module: ModuleType) -> None:
    """Each layer op against its ``mx.fast`` twin: row tails, strided (transposed, cache-slice) inputs,
    grouped heads, decode and causal blocks, large rope offsets, SiLU far into both tails."""
    key = mx.random.split(mx.random.key(11), 6)
    with mx.stream(mx.cpu):
        x = mx.random.normal((3, 2, 44), key=key[0])
        w = mx.random.normal((44,), key=key[1])
        checks = {"rms_norm": (module.rms_norm(x, w, 1e-5), mx.fast.rms_norm(x, w, 1e-5))}
        g = mx.concatenate([mx.linspace(-90, 90, 41)[None], mx.random.normal((2, 41), key=key[2]) * 4])
        checks["silu_mul"] = (module.silu_mul(g, g[::-1]), nn.silu(g) * g[::-1])
        t = mx.random.normal((1, 5, 3, 16), key=key[3]).transpose(0, 2, 1, 3)  # (1, 3, 5, 16), strided
        for off in (0, 7, 3000):
            want = mx.fast.rope(t, 12, traditional=False, base=10000.0, scale=0.5, offset=off)
            checks[f"rope@{off}"] = (module.rope(t, 12, 10000.0, 0.5, off, inv_freq(12, 10000.0)), want)
        buf = mx.random.normal((1, 2, 16, 16), key=key[4])
        kc, vc = buf[:, :, :9], buf[:, :, 3:12] * 0.5  # cache-slice views
        for L, mask in ((1, None), (5, "causal"), (5, None)):
            q = mx.random.normal((1, 6, L, 16), key=key[5]) * 2
            want = mx.fast.scaled_dot_product_attention(q, kc, vc, scale=0.25, mask=mask)
            checks[f"attention L={L} {mask}"] = (module.attention(q, kc, vc, 0.25, mask == "causal"), want)
        for name, (got, want) in checks.items():
            err = _rel(got, want)
            if not err < 2e-5:
                raise ValueError(f"{name} disagrees with its mx.fast twin (relative error {err:.3g})")


def _check_block(module: ModuleType) -> None:
    """Ten decode steps of a small random llama block (grouped heads, 4- and 8-bit projections, partial
    rope with a scale, a buffer that fills up and grows) through the fused kernel against the same block
    run layer by layer."""
    from lacy_mlx.runtime.quantized import accelerate

    args = llama.ModelArgs(model_type="llama", hidden_size=64, num_hidden_layers=1, intermediate_size=96,
                           num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5, vocab_size=8)
    with mx.stream(mx.cpu):
        mx.random.seed(5)
        block = llama.TransformerBlock(args)
        block.self_attn.rope = nn.RoPE(8, base=5000.0, scale=0.5)  # of head dim 16
        nn.quantize(block, group_size=32, bits=4)
        block.mlp.down_proj = nn.QuantizedLinear.from_linear(nn.Linear(96, 64, bias=False), group_size=32, bits=8)
        accelerate(block)
        accelerate_layers(block)
        if _block_plan(block) is None:
            raise ValueError("the check's own block was not taken by the fused kernel")
        xs = mx.random.normal((12, 1, 1, 64))
        fused, plain = KVCache(), KVCache()
        for c in (fused, plain):  # a 2-token prompt into an 8-row buffer: it fills at step 8 and grows
            c.step = 8
            llama.TransformerBlock.__call__(block, mx.concatenate([xs[0], xs[1]], axis=1), "causal", c)
        for i in range(2, 12):
            full = fused.offset >= fused.keys.shape[2]  # as CpuLlamaBlock: the layers grow a full buffer
            got = (llama.TransformerBlock.__call__(block, xs[i], None, fused) if full
                   else _fused_step(module, block, _block_plan(block), xs[i], fused))
            want = llama.TransformerBlock.__call__(block, xs[i], None, plain)
            err = _rel(got, want)
            if not err < 2e-5:
                raise ValueError(f"the fused block disagrees with the layers at step {i} (relative error {err:.3g})")
        if fused.offset != plain.offset or _rel(fused.state[0][..., :12, :], plain.state[0][..., :12, :]) > 2e-5:
            raise ValueError("the fused block left the KV cache other than the layers do")
