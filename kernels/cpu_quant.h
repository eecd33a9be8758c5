// What the quantized product's two files share (cpu_quant.cpp: the primitives, the portable
// kernel and the thread pool; cpu_qmv.cpp: the AVX2 / AVX-512 kernel).
#pragma once

#include <cstdint>
#include <cstring>
#include <vector>

#include "cpu_common.h"

namespace lacy {

struct QArgs {
  const float* x;      // (M, K)
  const uint32_t* w;   // (N, K * bits / 32)
  const void* s;       // (N, G) float32, or float16 when half
  const void* b;       // (N, G) likewise
  float* out;          // (M, N)
  int64_t M, N, K, G;
  bool half;
};

// IEEE half to float, exactly (subnormals, infinities and NaN included).
inline float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {
    if (man == 0) {
      bits = sign;
    } else {  // subnormal: man * 2^-24, exact in float
      float f = static_cast<float>(man) * 5.9604644775390625e-08f;
      return sign ? -f : f;
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (man << 13);
  } else {
    bits = sign | ((exp + 112) << 23) | (man << 13);
  }
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

// Scales and biases of rows [n, n + rows) as float32 (rows * G each): pointers into the arrays
// themselves when float32, else converted into buf (a few per row against 32 weights per group).
inline void row_params(const void* s, const void* b, bool half, int64_t G, int64_t n, int64_t rows,
                       std::vector<float>& buf, const float*& sp, const float*& bp) {
  if (!half) {
    sp = static_cast<const float*>(s) + n * G;
    bp = static_cast<const float*>(b) + n * G;
    return;
  }
  buf.resize(2 * rows * G);
  const uint16_t* s16 = static_cast<const uint16_t*>(s) + n * G;
  const uint16_t* b16 = static_cast<const uint16_t*>(b) + n * G;
  for (int64_t i = 0; i < rows * G; ++i) {
    buf[i] = half_to_float(s16[i]);
    buf[rows * G + i] = half_to_float(b16[i]);
  }
  sp = buf.data();
  bp = buf.data() + rows * G;
}

// out = x @ dequantize(w).T for each of `count` matrices sharing x (and M, K, G) with the SIMD kernel,
// their output rows taken as one range split by parallel_rows in slices of multiples of `align`;
// false (nothing done) when the CPU has no AVX2 + FMA.
bool qmv_run(const QArgs* mats, int count, int bits, int gs, int64_t align);

// out = x @ dequantize(w).T on the calling thread plus the pool: the SIMD kernel, else the portable
// one (cpu_quant.cpp); what the quantized_matmul primitive's task and the fused decoder block run.
void quantized_product(const QArgs& a, int bits, int gs);

// quantized_product of `count` matrices of the same x, K, bits and group size, in one parallel
// region: a decode step's q, k, v (or gate and up) need one hand-off between threads, not three.
void quantized_products(const QArgs* mats, int count, int bits, int gs);

// The SIMD level the kernel uses: 2 AVX-512, 1 AVX2, 0 none (the portable kernel). force >= 0
// caps it (tests run each path on one machine); -1 only reads it.
int qmv_level(int force);

}  // namespace lacy
