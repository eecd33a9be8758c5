"""Kernel sources on any machine: they ship in the package and declare what the dispatcher passes."""
from __future__ import annotations

import importlib.resources
import re
import shutil
import subprocess
import sys
from fnmatch import fnmatch
from pathlib import Path

import mlx.core as mx
import pytest

from lacy_mlx.kernels import kernel_source
from lacy_mlx.kernels.dispatch import CUDA_GATE, DECLS, NT, plan_split, split_sections

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted({d.source for d in DECLS})


def _declared(text: str, kernel: str) -> dict[str, tuple[str, ...]]:
    """The ``// inputs:``/``// outputs:``/``// template:`` lines after ``// kernel: <kernel>``."""
    block = re.search(rf"^// kernel: {kernel}\n((?:// (?:inputs|outputs|template): .*\n)+)", text, re.M)
    assert block, f"no '// kernel: {kernel}' block"
    found = dict(re.findall(r"^// (inputs|outputs|template): (.*)$", block.group(1), re.M))
    return {key: tuple(found[key].split()) for key in ("inputs", "outputs", "template")}


def _code(section: str) -> str:
    return re.sub(r"//.*", "", section)


@pytest.mark.parametrize("name", SOURCES)
def test_sources_ship_in_the_package(name):
    assert importlib.resources.files("lacy_mlx.kernels").joinpath(name).is_file()
    assert "@@header" in kernel_source(name)
    if sys.version_info >= (3, 11):
        import tomllib

        data = tomllib.loads((ROOT / "pyproject.toml").read_text())
        patterns = data["tool"]["setuptools"]["package-data"]["lacy_mlx.kernels"]
        assert any(fnmatch(name, p) for p in patterns), f"{name} not in package-data {patterns}"


@pytest.mark.parametrize("decl", DECLS, ids=lambda d: f"{d.source}:{d.section}")
def test_source_declares_what_the_dispatcher_passes(decl):
    text = kernel_source(decl.source)
    declared = _declared(text, decl.section)
    assert declared == {"inputs": decl.inputs, "outputs": decl.outputs, "template": decl.template}
    sections = split_sections(text)
    body = _code(sections[decl.section])
    code = body + _code(sections["header"])
    for name in decl.inputs + decl.outputs:
        assert re.search(rf"\b{name}\b", body), f"{name} unused in {decl.section}"
    for name in decl.template:
        assert re.search(rf"\b{name}\b", code), f"template {name} unused in {decl.source}"


def test_split_plan_covers_every_row():
    for rows in (1, 3, 8, 64, 600):
        for vocab in (1, 255, 2049, 32000, 49152, 151936, 256000):
            split, chunk = plan_split(rows, vocab, 528)
            assert chunk % 256 == 0 and split >= 1
            assert (split - 1) * chunk < vocab <= split * chunk  # no empty block
    assert plan_split(1, 151936, 528)[0] > 16  # decode rows spread over many blocks


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed")
def test_cuda_source_compiles_with_nvcc(tmp_path):
    """Render the kernel as mx.fast.cuda_kernel does (signature, template lines) and compile it.

    MLX's JIT headers ship only in its CUDA wheel, so a stub stands in for utils.cuh here; the
    CUDA tests compile the real thing through NVRTC.
    """
    stub = tmp_path / "mlx/backend/cuda/device/utils.cuh"
    stub.parent.mkdir(parents=True)
    stub.write_text("#pragma once\n#include <cuda_fp16.h>\n#include <cuda_bf16.h>\n#include <cstdint>\n")
    parts = split_sections(kernel_source(CUDA_GATE.source))
    ctypes = {"float32": "float", "float16": "__half", "bfloat16": "__nv_bfloat16"}
    args = {"params": "const float*", "meta": "const int32_t*", "workspace": "const float*",
            "entropy": "float*", "p_call": "float*", "p_top": "float*", "token": "int32_t*",
            "decision": "bool*"}
    src = ['#include "mlx/backend/cuda/device/utils.cuh"\n#include <cooperative_groups.h>\n',
           parts["header"], "namespace mlx::core::cu {\n"]
    for tname, ctype in ctypes.items():
        sig = [f"const {ctype}* logits"] + [f"{args[n]} {n}" for n in CUDA_GATE.inputs[1:] + CUDA_GATE.outputs]
        src.append(f"__global__ void custom_kernel_gate_{tname}({', '.join(sig)}) {{\n"
                   f"  using T = {ctype};\n  constexpr int NT = {NT};\n{parts['gate']}\n}}\n")
    src.append("}\n")
    (tmp_path / "gate.cu").write_text("".join(src))
    proc = subprocess.run(
        ["nvcc", "-arch=sm_80", "-std=c++17", "-I", str(tmp_path), "-c", "gate.cu", "-o", "gate.o"],
        cwd=tmp_path, capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stderr


class _FakeKernel:
    """Stands in for mx.fast.cuda_kernel / metal_kernel: records calls, answers with the reference."""

    def __init__(self, **build):
        self.build, self.calls = build, []

    def __call__(self, *, inputs, template, grid, threadgroup, output_shapes, output_dtypes):
        from lacy_mlx.gate import gate_stats_reference

        self.calls.append(dict(inputs=inputs, template=template, grid=grid, threadgroup=threadgroup))
        assert len(inputs) == len(self.build["input_names"])
        assert len(output_shapes) == len(output_dtypes) == len(self.build["output_names"])
        if self.build["output_names"] == ["partials"]:
            return [mx.zeros(output_shapes[0], dtype=output_dtypes[0])]
        meta = inputs[2].tolist()
        stats = gate_stats_reference(inputs[0], meta[3], inputs[1])
        return [stats.entropy, stats.p_call, stats.p_top, stats.token, stats.decision]


@pytest.mark.parametrize("backend", ["cuda", "metal"])
def test_dispatcher_plumbing_with_a_fake_kernel(monkeypatch, backend):
    """The per-call path (plans, workspaces, meta, grids) without a GPU."""
    from lacy_mlx.kernels import dispatch
    from lacy_mlx.gate import gate_params

    made = []
    monkeypatch.setattr(mx.fast, f"{backend}_kernel", lambda **kw: made.append(_FakeKernel(**kw)) or made[-1])
    gate = dispatch.CudaGate() if backend == "cuda" else dispatch.MetalGate()
    x = mx.random.normal((2, 5000)).astype(mx.bfloat16)
    for _ in range(3):
        stats = gate(x, 4, gate_params("call", 0.0, 0.5).astype(mx.float16))
    assert stats.token.shape == (2,) and stats.decision.dtype == mx.bool_
    final = made[0] if backend == "cuda" else made[1]
    call = final.calls[-1]
    assert call["template"] == [("T", mx.bfloat16), ("NT", dispatch.NT)]
    assert call["inputs"][1].dtype == mx.float32  # params cast once for the kernel
    split, chunk = plan_split(2, 5000, type(gate).target_blocks)
    assert call["inputs"][2].tolist() == [5000, split, chunk, 4]
    if backend == "cuda":
        assert call["grid"] == (2 * split * NT, 1, 1)
        workspaces = {id(c["inputs"][3]) for c in final.calls}
        assert len(workspaces) == 3  # rotated: concurrent calls never share a counter
        assert call["inputs"][3].size == 2 * split * 4 + 2
    else:
        assert made[0].calls[-1]["grid"] == (2 * split * NT, 1, 1) and call["grid"] == (2 * NT, 1, 1)
    assert gate(mx.arange(10, dtype=mx.int32), 1, gate_params("off", 0, 0)).token.item() == 9  # ints: reference


@pytest.mark.parametrize("backend", ["cuda", "metal"])
@pytest.mark.parametrize("fault", [None, "raise", "wrong"])
def test_dispatcher_falls_back_when_the_kernel_fails(monkeypatch, backend, fault):
    """A kernel that does not build or disagrees with the reference is never used."""
    from lacy_mlx.kernels import dispatch

    class Faulty(_FakeKernel):
        def __call__(self, **kw):
            if fault == "raise":
                raise RuntimeError("nvrtc: error: expected a ';'")
            out = super().__call__(**kw)
            if fault == "wrong" and len(out) == 5:
                out[3] = out[3] + 1
            return out

    monkeypatch.setattr(mx.fast, f"{backend}_kernel", lambda **kw: Faulty(**kw))
    monkeypatch.setattr(dispatch, "_on_gpu", lambda: True)
    monkeypatch.setattr(mx.metal, "is_available", lambda: backend == "metal")
    monkeypatch.setattr(dispatch, "_cuda_available", lambda: backend == "cuda")
    if fault is None:
        gate = dispatch.fused_gate_for_device()
        assert type(gate).__name__ == ("CudaGate" if backend == "cuda" else "MetalGate")
    else:
        with pytest.warns(UserWarning, match="disabled"):
            assert dispatch.fused_gate_for_device() is None
