#!/usr/bin/env bash
# Device check of the fused entropy gate (issue 5) on an NVIDIA machine with no network.
# Run from the repository root after the first half of MLX's CUDA wheel was copied to /tmp/p1
# and with .mlxcuda/p2 present (../shared/device/README.md). Logs and gate.json go to $OUT.
# Each step keeps going after a failure, so one run shows every problem (NVRTC errors included).
set -u
OUT=${OUT:-/tmp/gate_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
ROOT=$PWD
step() { echo; echo "=== $* ($(date +%T))"; }

{
  step setup
  nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,memory.used --format=csv
  whl=/tmp/$(cat .mlxcuda/p2/NAME)
  cat /tmp/p1/part_aa .mlxcuda/p2/part_ab > "$whl"
  python3 -m pip install -q --no-index --no-deps --target /tmp/site /tmp/p1/*.whl "$whl"
  # setup.py ships kernels/ as lacy_mlx.kernels; mirror that layout for a plain PYTHONPATH
  rm -rf /tmp/src && mkdir -p /tmp/src
  cp -r lacy_mlx tests benchmarks pyproject.toml /tmp/src/
  cp -r kernels /tmp/src/lacy_mlx/kernels && cp -r convert /tmp/src/lacy_mlx/convert
  python3 -c "import mlx.core as mx; print('mlx', mx.__version__, mx.default_device(), 'cuda', mx.cuda.is_available())"
} > "$OUT/setup.log" 2>&1
cat "$OUT/setup.log"
export PYTHONPATH=/tmp/site:/tmp/src
cd /tmp/src

step "compile smoke (prints NVRTC errors)" | tee "$OUT/smoke.log"
python3 - <<'PY' 2>&1 | tee -a "$OUT/smoke.log"
import traceback
import mlx.core as mx
from lacy_mlx.gate import gate_params, gate_stats_reference
from lacy_mlx.kernels.dispatch import CudaGate
gate = CudaGate()
for dtype in (mx.float32, mx.float16, mx.bfloat16):
    for shape in ((1, 151936), (3, 1001)):
        try:
            x = (mx.random.normal(shape) * 3).astype(dtype)
            p = gate_params("either", 2.0, 0.1)
            got, want = gate(x, 5, p), gate_stats_reference(x, 5, p)
            mx.eval(got.entropy, want.entropy)
            err = mx.max(mx.abs(got.entropy - want.entropy)).item()
            same = mx.array_equal(got.token, want.token).item()
            print(f"{dtype} {shape}: entropy max err {err:.2e}, tokens equal {same}")
        except Exception:
            traceback.print_exc()
PY

# GATE_QUICK=1: only the CUDA parity tests, no whole-suite run (a rerun after a kernel change)
tests="tests/test_kernels_cuda.py tests/test_gate_reference.py tests/test_kernels_sources.py"
[ "${GATE_QUICK:-0}" = 1 ] && tests="tests/test_kernels_cuda.py"
step pytest | tee "$OUT/pytest.log"
timeout 300 python3 -m pytest -q -p no:cacheprovider -o addopts="" -rs $tests 2>&1 | tee -a "$OUT/pytest.log"

step benchmark | tee "$OUT/bench.log"
timeout 300 python3 benchmarks/gate.py --full --json "$OUT/gate.json" --variants "${GATE_VARIANTS:-}" \
  2>&1 | tee -a "$OUT/bench.log"

step "fixed-cost probes" | tee "$OUT/costs.log"
timeout 150 python3 benchmarks/gate_costs.py 2>&1 | tee -a "$OUT/costs.log"

if command -v ncu >/dev/null; then
  step "ncu kernel durations" | tee "$OUT/ncu.log"
  timeout 90 ncu --clock-control none --metrics gpu__time_duration.sum python3 benchmarks/gate.py --probe \
    >> "$OUT/ncu.log" 2>&1
  grep -E "gate|educe|duration" "$OUT/ncu.log" | cut -c1-150 | tail -24
fi

[ "${GATE_QUICK:-0}" = 1 ] && exit 0
step "whole suite, cuda-marked tests" | tee "$OUT/pytest_all.log"
timeout 150 python3 -m pytest -q -p no:cacheprovider -m cuda --continue-on-collection-errors tests \
  2>&1 | tail -15 | tee -a "$OUT/pytest_all.log"
cd "$ROOT"
