// The decoder layer's row kernels (cpu_decode.cpp), shared by its one-op primitives and the fused
// decoder block of cpu_block.cpp, so both compute the same floats the same way.
#pragma once

#include <cstdint>
#include <vector>

#include "cpu_common.h"

namespace lacy {

// A strided 4-D view (B, H, T, D) whose last axis is contiguous.
struct View {
  const float* p;
  int64_t s0, s1, s2;  // element strides of B, H, T
  const float* row(int64_t b, int64_t h, int64_t t) const { return p + b * s0 + h * s1 + t * s2; }
};

// softmax(q k^T * scale [causal]) v over grouped heads: Hq query heads share each of Hk kv heads.
struct Attn {
  View q, k, v;
  float* out;  // (B, Hq, L, D) contiguous
  int64_t B, Hq, Hk, L, T, D;
  float scale;
  bool causal;
};

// y = x / sqrt(mean(x^2) + eps) * w for `rows` rows of n.
void rms_rows(const float* x, const float* w, float* y, int64_t rows, int64_t n, float eps);

// y = silu(g) * u, elementwise.
void silu_mul_rows(const float* g, const float* u, float* y, int64_t size);

// Non-traditional rope of x (B, H, T, D) at positions offset.. into y (contiguous; may be x's own rows).
void rope_rows(const View& x, const float* inv_freq, float* y, int64_t B, int64_t H, int64_t T, int64_t D,
               int64_t dims, int64_t offset, float scale);

// Attention items [lo, hi) of (b, query head, query row).
void attend_range(const Attn& a, int64_t lo, int64_t hi);

// A view of x, gathered into buf when its last axis is not contiguous.
View view_of(const mx::array& x, std::vector<float>& buf);

}  // namespace lacy
