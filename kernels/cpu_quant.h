// What the quantized product's two files share (cpu_quant.cpp: the primitives, the portable
// kernel and the thread pool; cpu_qmv.cpp: the AVX2 / AVX-512 kernel).
#pragma once

#include <cstdint>

#include "cpu_common.h"

namespace lacy {

struct QArgs {
  const float* x;      // (M, K)
  const uint32_t* w;   // (N, K * bits / 32)
  const float* s;      // (N, G)
  const float* b;      // (N, G)
  float* out;          // (M, N)
  int64_t M, N, K, G;
};

// out = x @ dequantize(w).T with the SIMD kernel, output rows split by parallel_rows in slices of
// multiples of `align`; false (nothing done) when the CPU has no AVX2 + FMA.
bool qmv_run(const QArgs& a, int bits, int gs, int64_t align);

// The SIMD level the kernel uses: 2 AVX-512, 1 AVX2, 0 none (the portable kernel). force >= 0
// caps it (tests run each path on one machine); -1 only reads it.
int qmv_level(int force);

}  // namespace lacy
