"""The compiled CPU kernels (kernels/cpu_encoder.cpp) against their plain-MLX twins and numpy.

Runs for real wherever tests run (Linux: the build uses the system g++ and the installed MLX and
nanobind); `make` builds it into the cache first, so only the from-scratch build test compiles.
"""
from __future__ import annotations

import os
import platform
import subprocess
import sys
import threading
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from lacy_mlx import polyops
from lacy_mlx.encoder import fastmath
from lacy_mlx.kernels import cpu_build

pytestmark = pytest.mark.skipif(platform.system() != "Linux", reason="the CPU kernels are built and used on Linux only")


@pytest.fixture(scope="module")
def kernels():
    module = cpu_build.cpu_kernels()
    assert module is not None, "the CPU kernels failed to build or load: see the warning above"
    return module


def _reference(x: np.ndarray) -> np.ndarray:
    """2^(x - row max), the difference rounded to float32 as the kernel's is, then exact."""
    x = x.astype(np.float32)
    d = (x - x.max(axis=-1, keepdims=True)).astype(np.float64)
    return np.exp2(np.maximum(d, -126.0))


@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (2, 8), (4, 9), (2, 3, 33), (2, 4, 64, 64), (5, 0)])
def test_matches_numpy(kernels, shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(sum(shape))
    x = (rng.standard_normal(shape) * 40).astype(np.float32)
    got = np.array(kernels.exp2_rowshift(mx.array(x)), dtype=np.float64)
    assert got.shape == x.shape
    if x.size:
        want = _reference(x)
        assert np.max(np.abs(got - want) / want) < 1e-6


def test_extreme_rows(kernels) -> None:
    x = np.array([[0.0, -np.inf, -1e30, 5.0, 5.0, -200.0, 126.0, -126.0, 1.0],
                  [3.0] * 9,
                  [1e30, -1e30, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]], np.float32)
    got = np.array(kernels.exp2_rowshift(mx.array(x)), dtype=np.float64)
    # Below -126 the result is 2^-126 (as the twin), never 0 or NaN; the max itself gives 1.
    np.testing.assert_allclose(got, _reference(x), rtol=1e-6)
    np.testing.assert_allclose(got.max(axis=-1), 1.0, rtol=2e-7)


def test_strided_inputs_and_input_left_intact(kernels) -> None:
    x = mx.array(np.random.default_rng(1).standard_normal((6, 40)).astype(np.float32) * 10)
    before = np.array(x)
    views = [x.T, x[:, ::3], x[1:5, 7:31], mx.broadcast_to(x[:1], (3, 40))]
    for view in views:
        np.testing.assert_allclose(np.array(kernels.exp2_rowshift(view)), _reference(np.array(view)), rtol=1e-6)
    # A temporary's buffer is reused for the output (donation); a live input never is.
    np.testing.assert_allclose(np.array(kernels.exp2_rowshift(x * 1.0)), _reference(before), rtol=1e-6)
    np.testing.assert_array_equal(np.array(x), before)


def test_twin_agrees(kernels) -> None:
    x = mx.array(np.random.default_rng(2).standard_normal((2, 3, 50, 50)).astype(np.float32) * 8)
    twin = polyops.exp2_nonpos(x - mx.max(x, axis=-1, keepdims=True))
    np.testing.assert_allclose(np.array(kernels.exp2_rowshift(x)), np.array(twin), rtol=5e-7)
    assert float(mx.max(mx.abs(fastmath.exp2_rowshift(x) - twin) / twin)) < 5e-7


def test_other_streams_and_threads(kernels) -> None:
    x = np.random.default_rng(3).standard_normal((8, 77)).astype(np.float32)
    want = _reference(x)
    with mx.stream(mx.new_stream(mx.cpu)):
        np.testing.assert_allclose(np.array(kernels.exp2_rowshift(mx.array(x))), want, rtol=1e-6)
    out: list[np.ndarray] = []

    def worker() -> None:
        with mx.stream(mx.new_stream(mx.cpu)):
            y = kernels.exp2_rowshift(mx.array(x) * 1.0)
            mx.eval(y)
            out.append(np.array(y))

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    np.testing.assert_allclose(out[0], want, rtol=1e-6)


def test_gradient_through_a_softmax(kernels) -> None:
    x = mx.array(np.random.default_rng(4).standard_normal((3, 19)).astype(np.float32))
    w = mx.array(np.random.default_rng(5).standard_normal((3, 19)).astype(np.float32))

    def fused(s):
        e = kernels.exp2_rowshift(s)
        return (w * e / e.sum(axis=-1, keepdims=True)).sum()

    def exact(s):
        return (w * mx.softmax(s * np.log(2.0), axis=-1)).sum()

    np.testing.assert_allclose(np.array(mx.grad(fused)(x)), np.array(mx.grad(exact)(x)), atol=1e-6)


def test_gelu_matches_erf_form(kernels) -> None:
    import math

    import mlx.nn as nn

    x = np.concatenate([np.linspace(-12, 12, 4001), [0.0, -0.0, 1e4, -1e4, 1e30, -1e30]]).astype(np.float32)
    want = np.array([v * 0.5 * (1 + math.erf(v / math.sqrt(2))) for v in x.astype(np.float64)])
    got = np.array(kernels.gelu_erf(mx.array(x)), dtype=np.float64)
    assert np.max(np.abs(got - want) / np.maximum(np.abs(x), 1.0)) < 5e-7
    twin = np.array(polyops.gelu_finish(mx.array(x), polyops.gelu_base(mx.array(x))))
    np.testing.assert_allclose(got, twin, rtol=1e-6, atol=1e-6)  # FMA contraction differs
    grad = mx.grad(lambda t: kernels.gelu_erf(t).sum())(mx.array(x[:4001]))
    exact = mx.grad(lambda t: nn.gelu(t).sum())(mx.array(x[:4001]))
    np.testing.assert_allclose(np.array(grad), np.array(exact), atol=1e-5)


@pytest.mark.parametrize("rows, cols, n", [(1, 1, 1), (5, 13, 12), (64, 385, 384), (3, 40, 17)])
def test_layer_norm_rows(kernels, rows: int, cols: int, n: int) -> None:
    rng = np.random.default_rng(rows + cols)
    x = (rng.standard_normal((rows, cols)) * 3 + 1).astype(np.float32)
    w, b = (rng.standard_normal(cols).astype(np.float32) for _ in range(2))
    got = np.array(kernels.layer_norm_rows(mx.array(x), mx.array(w), mx.array(b), 1e-12, n), dtype=np.float64)
    x64 = x.astype(np.float64)
    mean = x64[:, :n].mean(axis=1, keepdims=True)
    var = ((x64[:, :n] - mean) ** 2).mean(axis=1, keepdims=True)
    want = (x64 - mean) / np.sqrt(var + 1e-12) * w + b
    np.testing.assert_allclose(got, want, atol=2e-5 * max(1.0, np.abs(want).max()))
    with pytest.raises(ValueError, match="1 <= n <= C"):
        kernels.layer_norm_rows(mx.array(x), mx.array(w), mx.array(b), 1e-12, cols + 1)


def test_bad_dtype_is_refused(kernels) -> None:
    with pytest.raises(ValueError, match="float32"):
        kernels.exp2_rowshift(mx.zeros((2, 3), dtype=mx.float16))
    with pytest.raises(ValueError, match="float32"):
        kernels.gelu_erf(mx.zeros((2, 3), dtype=mx.bfloat16))


def test_packed_encoder_same_with_and_without_kernels(monkeypatch) -> None:
    from test_encoder_packed import _random_model

    from lacy_mlx.encoder import packed
    from lacy_mlx.encoder.packed import PackedBatch, PackedBert

    model = _random_model()
    rng = np.random.default_rng(7)
    ids = [rng.integers(0, 50, n).tolist() for n in (60, 3, 120)]
    batch = PackedBatch.build(ids, [[0] * len(r) for r in ids], 4)
    outs = []
    for off in (False, True):
        if off:
            monkeypatch.setattr(packed, "cpu_kernels_for", lambda x: None)
            monkeypatch.setattr(fastmath, "cpu_kernels_for", lambda x: None)
        outs.append([np.array(PackedBert(model)(batch, per_sequence=p)) for p in (True, False)])
    for with_kernels, plain in zip(*outs):
        np.testing.assert_allclose(with_kernels, plain, atol=2e-5)


def test_turned_off_and_fallback(monkeypatch) -> None:
    monkeypatch.setenv("LACY_MLX_CPU_KERNELS", "0")
    assert cpu_build.cpu_kernels() is None
    x = mx.array(np.random.default_rng(6).standard_normal((4, 30)).astype(np.float32))
    np.testing.assert_allclose(np.array(fastmath.exp2_rowshift(x)), _reference(np.array(x)), rtol=1e-6)


def test_missing_compiler_warns_and_falls_back(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LACY_MLX_CACHE", str(tmp_path))
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    with pytest.warns(UserWarning, match="no C\\+\\+ compiler"):
        assert cpu_build._build_and_load() is None
    assert not any(tmp_path.iterdir())  # nothing half-built left behind


def test_compiler_failure_is_reported(monkeypatch, tmp_path: Path) -> None:
    fake = tmp_path / "cxx"
    fake.write_text("#!/bin/sh\necho 'x.cpp:1: fatal error: Python.h: No such file or directory'\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("LACY_MLX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CXX", str(fake))
    with pytest.raises(cpu_build.KernelBuildError, match="python3-dev"):
        cpu_build.build()
    assert not any((tmp_path / "cache").iterdir())  # the temporary build folder is gone
    with pytest.warns(UserWarning, match="exit 1"):
        assert cpu_build._build_and_load() is None


def test_abi_mismatch_is_named(monkeypatch) -> None:
    class Refusing:
        def exp2_rowshift(self, x):
            raise TypeError("exp2_rowshift(): incompatible function arguments.")

    monkeypatch.setattr(cpu_build, "_load", lambda path: Refusing())
    with pytest.warns(UserWarning, match="nanobind .* ABI"):
        assert cpu_build._build_and_load() is None


@pytest.mark.slow  # a cold compile, twice (~50 s on 2 cores)
def test_build_from_scratch_and_repair(tmp_path: Path) -> None:
    """A cold cache builds (atomically: no temporary folder left); a damaged library is rebuilt."""
    env = {**os.environ, "LACY_MLX_CACHE": str(tmp_path)}
    cmd = [sys.executable, "-m", "lacy_mlx.kernels.cpu_build"]
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert "loaded and checked" in first.stdout, first.stdout + first.stderr
    (lib,) = tmp_path.glob("cpu-kernels-*/_lacy_cpu_kernels*.so")
    assert [p.name for p in tmp_path.iterdir()] == [lib.parent.name]
    lib.write_bytes(lib.read_bytes()[:1000])  # truncated, as by a full disk: dlopen would crash on it
    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert "loaded and checked" in second.stdout, second.stdout + second.stderr
    assert lib.stat().st_size > 1000


@pytest.mark.slow  # two cold compiles side by side (~45 s on 2 cores)
def test_concurrent_builds_share_one_result(tmp_path: Path) -> None:
    """Two processes racing on a cold cache both end up loading one intact library."""
    env = {**os.environ, "LACY_MLX_CACHE": str(tmp_path)}
    cmd = [sys.executable, "-m", "lacy_mlx.kernels.cpu_build"]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0 and "loaded and checked" in out, out + err
    assert len(list(tmp_path.iterdir())) == 1  # one build folder, no temporary ones left
