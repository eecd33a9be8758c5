// The quantized product's SIMD path (cpu_quant.cpp calls it when the CPU has AVX2 + FMA): x @ W.T
// for MLX's affine 4/8-bit weights, few rows of x (decode), bound by reading the weights.
//
// Per group, sum_k x_k (s q_k + b) = s * sum_k q_k x_k + b * sum_k x_k: the inner loop is only
// "widen the codes to floats, one FMA with x"; the scale is applied once per group and the bias
// term is a dot product of the row's biases with x's group sums, both computed once per call.
// 4-bit codes are split by nibble (the low nibbles of a block's 16 bytes are its even elements,
// the high ones its odd elements), so x is reordered the same way once per call instead of the
// codes being shuffled per row. AVX-512 where the CPU has it (16 lanes), else AVX2.
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "cpu_quant.h"

namespace lacy {

namespace {

// x for the kernels: 4-bit, each 32-block as [x0, x2, ..., x30, x1, x3, ..., x31]; 8-bit, as is.
void reorder(const QArgs& a, int bits, std::vector<float>& xp) {
  if (bits != 4) return;
  xp.resize(a.M * a.K);
  for (int64_t i = 0; i < a.M * a.K; i += 32)
    for (int j = 0; j < 16; ++j) {
      xp[i + j] = a.x[i + 2 * j];
      xp[i + 16 + j] = a.x[i + 2 * j + 1];
    }
}

void group_sums(const QArgs& a, int gs, std::vector<float>& xs) {
  xs.assign(a.M * a.G, 0.0f);
  for (int64_t m = 0; m < a.M; ++m)
    for (int64_t g = 0; g < a.G; ++g) {
      float s = 0.0f;
      for (int64_t k = g * gs; k < (g + 1) * gs; ++k) s += a.x[m * a.K + k];
      xs[m * a.G + g] = s;
    }
}

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")
// 16 codes from 16 bytes, as floats.
inline __m512 widen16(__m128i v) { return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(v)); }

// Codes of one 32-block of row wr as two 16-lane float vectors (f0 pairs with xp[k..k+16), f1 with the next 16).
template <int BITS>
inline void codes512(const uint8_t* wr, int64_t k, __m512& f0, __m512& f1) {
  if constexpr (BITS == 4) {
    const __m128i low = _mm_set1_epi8(0x0f);
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(wr + k / 2));
    f0 = widen16(_mm_and_si128(v, low));
    f1 = widen16(_mm_and_si128(_mm_srli_epi16(v, 4), low));
  } else {
    f0 = widen16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(wr + k)));
    f1 = widen16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(wr + k + 16)));
  }
}

// NR rows of W from n against MT rows of x from m0: NR x MT independent accumulator chains.
// The scale of group g of row n, and 16 biases of row n from group g (the live ones; float32 or float16).
template <bool HALF>
inline float scale512(const QArgs& a, int64_t i) {
  if constexpr (HALF) return _cvtsh_ss(static_cast<const uint16_t*>(a.s)[i]);
  else return static_cast<const float*>(a.s)[i];
}
template <bool HALF>
inline __m512 biases512(const QArgs& a, int64_t i, __mmask16 live) {
  if constexpr (HALF) return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(live, static_cast<const uint16_t*>(a.b) + i));
  else return _mm512_maskz_loadu_ps(live, static_cast<const float*>(a.b) + i);
}

template <int BITS, int MT, int NR, bool HALF>
void tile512(const QArgs& a, const float* xp, const float* xs, int gs, int64_t m0, int64_t n) {
  const int64_t bpr = a.K * BITS / 8, bpg = gs / 32;  // bytes per row, 32-blocks per group
  const uint8_t* w0 = reinterpret_cast<const uint8_t*>(a.w) + n * bpr;
  __m512 acc[NR][MT];
  for (int r = 0; r < NR; ++r)
    for (int m = 0; m < MT; ++m) acc[r][m] = _mm512_setzero_ps();
  for (int64_t g = 0; g < a.G; ++g) {
    __m512 t[NR][MT];
    for (int r = 0; r < NR; ++r)
      for (int m = 0; m < MT; ++m) t[r][m] = _mm512_setzero_ps();
    for (int64_t blk = 0; blk < bpg; ++blk) {
      const int64_t k = (g * bpg + blk) * 32;
      for (int r = 0; r < NR; ++r) {
        __m512 f0, f1;
        codes512<BITS>(w0 + r * bpr, k, f0, f1);
        for (int m = 0; m < MT; ++m) {
          const float* xr = xp + (m0 + m) * a.K + k;
          t[r][m] = _mm512_fmadd_ps(f0, _mm512_loadu_ps(xr), t[r][m]);
          t[r][m] = _mm512_fmadd_ps(f1, _mm512_loadu_ps(xr + 16), t[r][m]);
        }
      }
    }
    for (int r = 0; r < NR; ++r) {
      const __m512 sc = _mm512_set1_ps(scale512<HALF>(a, (n + r) * a.G + g));
      for (int m = 0; m < MT; ++m) acc[r][m] = _mm512_fmadd_ps(t[r][m], sc, acc[r][m]);
    }
  }
  for (int64_t g = 0; g < a.G; g += 16) {  // + biases . group sums of x, 16 groups a vector
    const __mmask16 live = a.G - g >= 16 ? __mmask16(0xffff) : __mmask16((1u << (a.G - g)) - 1);
    for (int r = 0; r < NR; ++r) {
      const __m512 bv = biases512<HALF>(a, (n + r) * a.G + g, live);
      for (int m = 0; m < MT; ++m) {
        acc[r][m] = _mm512_fmadd_ps(bv, _mm512_maskz_loadu_ps(live, xs + (m0 + m) * a.G + g), acc[r][m]);
      }
    }
  }
  for (int r = 0; r < NR; ++r)
    for (int m = 0; m < MT; ++m) a.out[(m0 + m) * a.N + n + r] = _mm512_reduce_add_ps(acc[r][m]);
}

template <int BITS, int MT>
void rows512(const QArgs& a, const float* xp, const float* xs, int gs, int64_t m0, int64_t n0, int64_t n1) {
  constexpr int NR = MT <= 2 ? 4 : 2;  // rows of W at a time: enough independent chains to hide FMA latency
  int64_t n = n0;
  if (a.half) {
    for (; n + NR <= n1; n += NR) tile512<BITS, MT, NR, true>(a, xp, xs, gs, m0, n);
    for (; n < n1; ++n) tile512<BITS, MT, 1, true>(a, xp, xs, gs, m0, n);
  } else {
    for (; n + NR <= n1; n += NR) tile512<BITS, MT, NR, false>(a, xp, xs, gs, m0, n);
    for (; n < n1; ++n) tile512<BITS, MT, 1, false>(a, xp, xs, gs, m0, n);
  }
}

template <int BITS>
void range512(const QArgs& a, const float* xp, const float* xs, int gs, int64_t n0, int64_t n1) {
  int64_t m = 0;
  for (; m + 4 <= a.M; m += 4) rows512<BITS, 4>(a, xp, xs, gs, m, n0, n1);
  switch (a.M - m) {
    case 3: rows512<BITS, 3>(a, xp, xs, gs, m, n0, n1); break;
    case 2: rows512<BITS, 2>(a, xp, xs, gs, m, n0, n1); break;
    case 1: rows512<BITS, 1>(a, xp, xs, gs, m, n0, n1); break;
    default: break;
  }
}
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
inline __m256 widen8(__m128i v) { return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v)); }  // the low 8 bytes

inline float hsum256(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

template <bool HALF>
inline float param256(const void* p, int64_t i) {
  if constexpr (HALF) return _cvtsh_ss(static_cast<const uint16_t*>(p)[i]);
  else return static_cast<const float*>(p)[i];
}

template <bool HALF>
inline float bias_term256(const QArgs& a, int64_t row, const float* xs) {
  float t = 0.0f;
  for (int64_t g = 0; g < a.G; ++g) t += param256<HALF>(a.b, row * a.G + g) * xs[g];
  return t;
}

template <int BITS, int MT, int NR, bool HALF>
void tile256(const QArgs& a, const float* xp, const float* xs, int gs, int64_t m0, int64_t n) {
  const int64_t bpr = a.K * BITS / 8, bpg = gs / 32;
  const __m128i low = _mm_set1_epi8(0x0f);
  const uint8_t* w0 = reinterpret_cast<const uint8_t*>(a.w) + n * bpr;
  __m256 acc[NR][MT];
  for (int r = 0; r < NR; ++r)
    for (int m = 0; m < MT; ++m) acc[r][m] = _mm256_setzero_ps();
  for (int64_t g = 0; g < a.G; ++g) {
    __m256 t[NR][MT];
    for (int r = 0; r < NR; ++r)
      for (int m = 0; m < MT; ++m) t[r][m] = _mm256_setzero_ps();
    for (int64_t blk = 0; blk < bpg; ++blk) {
      const int64_t k = (g * bpg + blk) * 32;
      for (int r = 0; r < NR; ++r) {
        const uint8_t* wr = w0 + r * bpr;
        __m128i v0, v1;
        if constexpr (BITS == 4) {
          const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(wr + k / 2));
          v0 = _mm_and_si128(v, low);
          v1 = _mm_and_si128(_mm_srli_epi16(v, 4), low);
        } else {
          v0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(wr + k));
          v1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(wr + k + 16));
        }
        const __m256 f[4] = {widen8(v0), widen8(_mm_srli_si128(v0, 8)), widen8(v1), widen8(_mm_srli_si128(v1, 8))};
        for (int m = 0; m < MT; ++m) {
          const float* xr = xp + (m0 + m) * a.K + k;
          for (int q = 0; q < 4; ++q) t[r][m] = _mm256_fmadd_ps(f[q], _mm256_loadu_ps(xr + 8 * q), t[r][m]);
        }
      }
    }
    for (int r = 0; r < NR; ++r) {
      const __m256 sc = _mm256_set1_ps(param256<HALF>(a.s, (n + r) * a.G + g));
      for (int m = 0; m < MT; ++m) acc[r][m] = _mm256_fmadd_ps(t[r][m], sc, acc[r][m]);
    }
  }
  for (int r = 0; r < NR; ++r)
    for (int m = 0; m < MT; ++m) {
      a.out[(m0 + m) * a.N + n + r] = hsum256(acc[r][m]) + bias_term256<HALF>(a, n + r, xs + (m0 + m) * a.G);
    }
}

template <int BITS, int MT>
void rows256(const QArgs& a, const float* xp, const float* xs, int gs, int64_t m0, int64_t n0, int64_t n1) {
  constexpr int NR = MT <= 2 ? 2 : 1;  // 16 ymm registers: accumulators and temporaries must fit
  int64_t n = n0;
  if (a.half) {
    for (; n + NR <= n1; n += NR) tile256<BITS, MT, NR, true>(a, xp, xs, gs, m0, n);
    for (; n < n1; ++n) tile256<BITS, MT, 1, true>(a, xp, xs, gs, m0, n);
  } else {
    for (; n + NR <= n1; n += NR) tile256<BITS, MT, NR, false>(a, xp, xs, gs, m0, n);
    for (; n < n1; ++n) tile256<BITS, MT, 1, false>(a, xp, xs, gs, m0, n);
  }
}

template <int BITS>
void range256(const QArgs& a, const float* xp, const float* xs, int gs, int64_t n0, int64_t n1) {
  int64_t m = 0;
  for (; m + 4 <= a.M; m += 4) rows256<BITS, 4>(a, xp, xs, gs, m, n0, n1);
  switch (a.M - m) {
    case 3: rows256<BITS, 3>(a, xp, xs, gs, m, n0, n1); break;
    case 2: rows256<BITS, 2>(a, xp, xs, gs, m, n0, n1); break;
    case 1: rows256<BITS, 1>(a, xp, xs, gs, m, n0, n1); break;
    default: break;
  }
}
#pragma GCC pop_options

int level() {  // 2: AVX-512 (F, BW, VL, DQ), 1: AVX2 + FMA + F16C, 0: neither
  static const int l = [] {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
      return 2;
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c") ? 1 : 0;
  }();
  return l;
}

}  // namespace

int qmv_level(int force) {
  static int forced = -1;
  if (force >= 0) forced = force;
  return forced >= 0 ? std::min(forced, level()) : level();
}

bool qmv_run(const QArgs& a, int bits, int gs, int64_t align) {
  const int l = qmv_level(-1);
  if (l == 0) return false;
  std::vector<float> xp, xs;
  reorder(a, bits, xp);
  group_sums(a, gs, xs);
  const float* x = bits == 4 ? xp.data() : a.x;
  parallel_rows(a.N, align, [&](int64_t lo, int64_t hi) {
    if (l == 2) {
      bits == 4 ? range512<4>(a, x, xs.data(), gs, lo, hi) : range512<8>(a, x, xs.data(), gs, lo, hi);
    } else {
      bits == 4 ? range256<4>(a, x, xs.data(), gs, lo, hi) : range256<8>(a, x, xs.data(), gs, lo, hi);
    }
  });
  return true;
}

}  // namespace lacy
