"""The fused decoder block (kernels/cpu_block.cpp): a llama decode step's layer as one kernel task.

Greedy tokens through the runtime's Decoder equal mlx-lm's for 4- and 8-bit, grouped-head models
across a KV-cache buffer growing; the cache rows it writes in place are the ones mlx-lm's layers
write, rows below the offset never change, and a trim followed by new tokens decodes as mlx-lm
does; blocks it cannot take (float weights, biases, prompts) run layer by layer; bad input to the
op is refused with what to do; a failed check warns and leaves the layers one by one.
"""
from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import pytest
from mlx_lm.generate import generate_step
from mlx_lm.models import llama
from mlx_lm.models.cache import make_prompt_cache

from cpu_checks import LINUX_ONLY, decoder_tokens, loaded, rel_error
from lacy_mlx.kernels import cpu_build
from lacy_mlx.runtime import cpu_layers, quantized

pytestmark = LINUX_ONLY


@pytest.fixture(scope="module")
def kernels():
    return loaded(cpu_layers.block_kernels(), "fused decoder-block CPU kernel")


def _llama(*, bits: int | None = 4, bias: bool = False, heads: int = 4, kv_heads: int = 2) -> nn.Module:
    args = llama.ModelArgs(model_type="llama", hidden_size=128, num_hidden_layers=2, intermediate_size=192,
                           num_attention_heads=heads, num_key_value_heads=kv_heads, rms_norm_eps=1e-5,
                           vocab_size=300, tie_word_embeddings=True, rope_theta=50000.0, attention_bias=bias)
    mx.random.seed(3)
    model = llama.Model(args)
    if bits is not None:
        nn.quantize(model, group_size=32, bits=bits)
        down = model.model.layers[1].mlp.down_proj  # mixed widths and groups, as mlx-lm's mixed recipes make
        model.model.layers[1].mlp.down_proj = nn.QuantizedLinear.from_linear(
            nn.Linear(down.weight.shape[1] * 32 // bits, 128, bias=False), group_size=64, bits=12 - bits)
    mx.eval(model.parameters())
    return model


def _count_fused(monkeypatch) -> list[int]:
    calls = [0]
    real = cpu_layers._fused_step

    def counting(*args):
        calls[0] += 1
        return real(*args)

    monkeypatch.setattr(cpu_layers, "_fused_step", counting)
    return calls


@pytest.mark.parametrize("bits,heads,kv_heads", [(4, 4, 2), (8, 4, 4), (4, 8, 1)])
def test_decodes_as_mlx_lm_across_a_growing_cache(kernels, monkeypatch, bits, heads, kv_heads) -> None:
    model = _llama(bits=bits, heads=heads, kv_heads=kv_heads)
    prompt = [(7 * i + 3) % 300 for i in range(250)]  # 250 + 14 tokens: the 256-row buffer grows once
    want = [int(t) for t, _ in generate_step(mx.array(prompt), model, max_tokens=14)]
    quantized.accelerate(model)
    cpu_layers.accelerate_layers(model)
    calls = _count_fused(monkeypatch)
    assert decoder_tokens(model, prompt, 14) == want
    # 15 one-token steps (the prompt's last token, then 14 advances) of 2 layers, all fused but the
    # step that finds the 256-row buffer full and grows it through the layers
    assert calls[0] == 2 * 15 - 2


def test_cache_rows_match_and_trim_continues(kernels) -> None:
    model = _llama()
    ref = _llama()
    quantized.accelerate(model)
    cpu_layers.accelerate_layers(model)
    quantized.accelerate(ref)  # the same kernels for the products, so the caches can be compared row by row
    cache, ref_cache = make_prompt_cache(model), make_prompt_cache(ref)
    prompt = mx.array([[5, 17, 99, 3, 250, 41]])
    mx.eval(model(prompt, cache=cache), ref(prompt, cache=ref_cache))
    for tok in (8, 9, 10, 11):
        mx.eval(model(mx.array([[tok]]), cache=cache), ref(mx.array([[tok]]), cache=ref_cache))
    rows = [mx.array(c.keys[..., :8, :]) for c in cache]  # copies of the rows below the trim point
    for c, r in zip(cache, ref_cache):
        assert c.offset == r.offset == 10
        assert rel_error(c.keys[..., :10, :], r.keys[..., :10, :]) < 1e-5
        assert rel_error(c.values[..., :10, :], r.values[..., :10, :]) < 1e-5
    for c in cache + ref_cache:
        c.trim(2)
    for tok in (200, 201, 202):
        got, want = model(mx.array([[tok]]), cache=cache), ref(mx.array([[tok]]), cache=ref_cache)
        assert rel_error(got, want) < 1e-5
    for c, kept in zip(cache, rows):
        assert mx.array_equal(c.keys[..., :8, :], kept)  # written in place, but never below the offset
    # a strided input (the kernel reads it as it is, without a contiguous copy op)
    wide = mx.random.normal((1, 1, 256))
    block, ref_block = model.model.layers[0], ref.model.layers[0]
    got = block(wide[..., ::2], None, cache[0])
    want = ref_block(mx.array(wide[..., ::2]), None, ref_cache[0])
    assert rel_error(got, want) < 1e-5


def test_blocks_it_cannot_take_run_layer_by_layer(kernels, monkeypatch) -> None:
    for model in (_llama(bits=None), _llama(bias=True)):
        prompt = [(5 * i) % 300 for i in range(20)]
        want = [int(t) for t, _ in generate_step(mx.array(prompt), model, max_tokens=6)]
        quantized.accelerate(model)
        cpu_layers.accelerate_layers(model)
        assert type(model.model.layers[0]) is cpu_layers.CpuLlamaBlock
        assert cpu_layers._block_plan(model.model.layers[0]) is None
        calls = _count_fused(monkeypatch)
        assert decoder_tokens(model, prompt, 6) == want
        assert calls[0] == 0
    # training goes through the layers (no cache): gradients flow as before
    model = _llama(bits=None)
    cpu_layers.accelerate_layers(model)
    loss = nn.value_and_grad(model, lambda m, x: m(x).sum())(model, mx.array([[1, 2, 3]]))[0]
    assert mx.isfinite(loss).item()


def test_bad_input_is_refused(kernels) -> None:
    model = _llama()
    quantized.accelerate(model)
    cpu_layers.accelerate_layers(model)
    block = model.model.layers[0]
    plan = cpu_layers._block_plan(block)
    cache = make_prompt_cache(model)[0]
    block(mx.random.normal((1, 3, 128)), "causal", cache)
    weights = [block[p][n][k] for p, n in cpu_layers._PROJECTIONS for k in ("weight", "scales", "biases")]

    def call(x=None, offset=None, w=None, quant=None):
        return kernels.decoder_block(mx.random.normal((1, 1, 128)) if x is None else x, cache.keys, cache.values,
                                     cache.offset if offset is None else offset, plan["inv_freq"],
                                     block.input_layernorm.weight, block.post_attention_layernorm.weight,
                                     weights if w is None else w, plan["quant"] if quant is None else quant,
                                     plan["heads"], plan["dims"], plan["rope_scale"], plan["attn_scale"], 1e-5, 1e-5)

    mx.eval(call())
    with pytest.raises(ValueError, match="grow it first"):
        call(offset=cache.keys.shape[2])
    with pytest.raises(ValueError, match="one token"):
        call(x=mx.random.normal((1, 2, 128)))
    with pytest.raises(ValueError, match="21 arrays"):
        call(w=weights[:-1])
    with pytest.raises(ValueError, match="q_proj weights must be"):
        call(w=[weights[3]] + weights[1:])
    with pytest.raises(ValueError, match="4- or 8-bit"):
        call(quant=[32, 3] + plan["quant"][2:])


def test_failed_check_warns_and_runs_layer_by_layer(kernels, monkeypatch) -> None:
    def broken(module):
        raise ValueError("the fused block disagrees with the layers at step 4")

    monkeypatch.delitem(cpu_build._loaded, "decoder-block")
    monkeypatch.setattr(cpu_layers, "_check_block", broken)
    with pytest.warns(UserWarning, match="using the switched layers one by one"):
        assert cpu_layers.block_kernels() is None
    model = _llama()
    prompt = [(3 * i) % 300 for i in range(12)]
    want = [int(t) for t, _ in generate_step(mx.array(prompt), model, max_tokens=5)]
    quantized.accelerate(model)
    cpu_layers.accelerate_layers(model)
    calls = _count_fused(monkeypatch)
    assert decoder_tokens(model, prompt, 5) == want
    assert calls[0] == 0


def test_two_threads_decode_the_same(kernels) -> None:
    model = _llama()
    prompt = [(11 * i) % 300 for i in range(1030)]  # long enough that attention splits its heads over threads
    want = [int(t) for t, _ in generate_step(mx.array(prompt), model, max_tokens=8)]
    quantized.accelerate(model)
    cpu_layers.accelerate_layers(model)
    before = cpu_build.quant_kernels().threads()
    quantized.set_threads(2)
    try:
        assert decoder_tokens(model, prompt, 8) == want
    finally:
        quantized.set_threads(before)
