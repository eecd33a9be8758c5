"""The decoder-layer CPU kernels (kernels/cpu_decode.cpp) against their mx.fast twins, and the
runtime's switched llama layers against mlx-lm's.

Parity: RMSNorm, SiLU * up, rope (offsets, strided input, partial dims) and attention (decode
rows and causal blocks, grouped heads, KV-cache slice views) within float32 rounding of
``mx.fast``; gradients equal the twins'; unsupported inputs go to the twin; greedy tokens of
a small llama through the runtime's Decoder equal mlx-lm's.
"""
from __future__ import annotations


import mlx.core as mx
import mlx.nn as nn
import pytest
from mlx_lm.generate import generate_step
from mlx_lm.models import llama

from cpu_checks import LINUX_ONLY, decoder_tokens, loaded, rel_error
from lacy_mlx.kernels import cpu_build
from lacy_mlx.runtime import cpu_layers

pytestmark = LINUX_ONLY


@pytest.fixture(scope="module")
def kernels():
    return loaded(cpu_layers.layer_kernels(), "decoder-layer CPU kernels")



def test_rms_norm_and_silu_mul(kernels) -> None:
    for n in (7, 64, 576, 1001):
        x = mx.random.normal((2, 3, n), key=mx.random.key(n)) * 3
        w = mx.random.normal((n,), key=mx.random.key(n + 1))
        assert rel_error(kernels.rms_norm(x, w, 1e-5), mx.fast.rms_norm(x, w, 1e-5)) < 1e-6
    g = mx.concatenate([mx.linspace(-200, 200, 1537)[None], mx.random.normal((3, 1537)) * 5])
    u = mx.random.normal(g.shape)
    assert rel_error(kernels.silu_mul(g, u), nn.silu(g) * u) < 1e-6
    assert rel_error(kernels.silu_mul(g[:, ::2], u[:, ::2]), nn.silu(g[:, ::2]) * u[:, ::2]) < 1e-6  # strided


@pytest.mark.parametrize("offset", [0, 1, 255, 4000])
def test_rope_matches_mlx(kernels, offset: int) -> None:
    x = mx.random.normal((2, 7, 3, 64), key=mx.random.key(offset)).transpose(0, 2, 1, 3)  # (B, H, T, D), strided
    for dims, base, scale in ((64, 100000.0, 1.0), (48, 10000.0, 0.25)):
        want = mx.fast.rope(x, dims, traditional=False, base=base, scale=scale, offset=offset)
        got = cpu_layers.rope(x, dims, traditional=False, base=base, scale=scale, offset=offset)
        assert rel_error(got, want) < 1e-5
    # what the kernel does not take goes to mx.fast unchanged: traditional pairs, an array offset
    for kw in ({"traditional": True, "offset": offset}, {"traditional": False, "offset": mx.array(offset)}):
        want = mx.fast.rope(x, 64, base=10000.0, scale=1.0, **kw)
        assert mx.array_equal(cpu_layers.rope(x, 64, base=10000.0, scale=1.0, **kw), want)


@pytest.mark.parametrize("L,mask", [(1, None), (3, "causal"), (17, "causal"), (6, None)])
def test_attention_matches_mlx(kernels, L: int, mask) -> None:
    buf = mx.random.normal((2, 3, 64, 40), key=mx.random.key(L))
    k, v = buf[:, :, :29], buf[:, :, 5:34] * 0.5  # strided views, as a KV cache's slice
    q = mx.random.normal((2, 9, L, 40), key=mx.random.key(L + 1)) * 2
    want = mx.fast.scaled_dot_product_attention(q, k, v, scale=0.16, mask=mask)
    assert rel_error(cpu_layers.attention(q, k, v, scale=0.16, mask=mask), want) < 1e-5


def test_attention_refusals_and_fallbacks(kernels) -> None:
    q, k = mx.random.normal((1, 4, 5, 16)), mx.random.normal((1, 2, 3, 16))
    with pytest.raises(ValueError, match="at least as many keys"):
        kernels.attention(q, k, k, 0.25, True)
    with pytest.raises(ValueError, match="multiple of Hk"):
        kernels.attention(mx.zeros((1, 3, 1, 16)), k, k, 0.25, False)
    arr_mask = mx.random.normal((1, 1, 5, 3))  # an array mask is mlx-lm's business
    want = mx.fast.scaled_dot_product_attention(q, k, k, scale=0.25, mask=arr_mask)
    assert mx.array_equal(cpu_layers.attention(q, k, k, scale=0.25, mask=arr_mask), want)
    half = q.astype(mx.float16)
    assert cpu_layers.attention(half, k.astype(mx.float16), k.astype(mx.float16), scale=0.25, mask=None).dtype == mx.float16


def test_gradients_are_the_twins(kernels) -> None:
    x = mx.random.normal((2, 3, 4, 16))
    w = mx.random.normal((16,))
    kv = mx.random.normal((2, 1, 6, 16))

    def grads(f):
        return mx.grad(lambda a, b: (f(a, b) * mx.arange(a.size).reshape(a.shape) / a.size).sum(), argnums=(0, 1))(x, w)

    ours = grads(lambda a, b: kernels.rms_norm(a, b, 1e-5))
    ref = grads(lambda a, b: mx.fast.rms_norm(a, b, 1e-5))
    assert all(rel_error(o, r) < 1e-5 for o, r in zip(ours, ref))
    ours = grads(lambda a, b: kernels.rope(a, 16, 10000.0, 1.0, 5, cpu_layers.inv_freq(16, 10000.0)) * b)
    ref = grads(lambda a, b: mx.fast.rope(a, 16, traditional=False, base=10000.0, scale=1.0, offset=5) * b)
    assert all(rel_error(o, r) < 1e-5 for o, r in zip(ours, ref))
    ours = grads(lambda a, b: kernels.attention(a, kv, kv * b, 0.3, True))
    ref = grads(lambda a, b: mx.fast.scaled_dot_product_attention(a, kv, kv * b, scale=0.3, mask="causal"))
    assert all(rel_error(o, r) < 1e-5 for o, r in zip(ours, ref))


def _tiny_llama(quantized: bool) -> nn.Module:
    args = llama.ModelArgs(model_type="llama", hidden_size=128, num_hidden_layers=2, intermediate_size=256,
                           num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5, vocab_size=300,
                           tie_word_embeddings=True, rope_theta=100000.0)
    mx.random.seed(5)
    model = llama.Model(args)
    if quantized:
        nn.quantize(model, group_size=32, bits=4)
    mx.eval(model.parameters())
    return model



@pytest.mark.parametrize("quantized", [False, True])
def test_switched_llama_decodes_as_mlx_lm(kernels, quantized: bool) -> None:
    model = _tiny_llama(quantized)
    prompt = [(11 * i) % 300 for i in range(37)]
    want = [int(t) for t, _ in generate_step(mx.array(prompt), model, max_tokens=14)]
    ref_logits = model(mx.array(prompt)[None])
    assert cpu_layers.accelerate_layers(model) == 2 * (2 + 1 + 1 + 1 + 1) + 1  # per layer 2 norms, rope, attention, MLP, block; final norm
    assert type(model.model.layers[1].self_attn) is cpu_layers.CpuLlamaAttention
    assert cpu_layers.accelerate_layers(model) == 0  # idempotent
    assert rel_error(model(mx.array(prompt)[None]), ref_logits) < 1e-5
    assert decoder_tokens(model, prompt, 14) == want


def test_failed_check_warns_and_keeps_mlx(monkeypatch, kernels) -> None:
    def broken(module):
        raise ValueError("rope@3000 disagrees with its mx.fast twin")

    monkeypatch.delitem(cpu_build._loaded, "decoder-layer")
    monkeypatch.setattr(cpu_layers, "_check", broken)
    with pytest.warns(UserWarning, match="using mx.fast ops"):
        assert cpu_layers.layer_kernels() is None
    model = _tiny_llama(False)
    assert cpu_layers.accelerate_layers(model) == 0
    x = mx.random.normal((1, 2, 3, 16))
    assert mx.array_equal(cpu_layers.rope(x, 16, traditional=False, base=1e4, scale=1.0, offset=2),
                          mx.fast.rope(x, 16, traditional=False, base=1e4, scale=1.0, offset=2))
