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

// Up to 4 scales from index i as the low lanes of a vector, by plain loads of exactly their bytes.
template <bool HALF>
inline __m512 scales4(const void* p, int64_t i, int n) {
  uint64_t bits = 0;
  if constexpr (HALF) {
    const uint16_t* h = static_cast<const uint16_t*>(p) + i;
    if (n == 4) std::memcpy(&bits, h, 8);
    else if (n == 2) { uint32_t b; std::memcpy(&b, h, 4); bits = b; }
    else for (int k = 0; k < n; ++k) bits |= uint64_t(h[k]) << (16 * k);
    return _mm512_castps128_ps512(_mm_cvtph_ps(_mm_cvtsi64_si128(static_cast<long long>(bits))));
  } else {
    const float* f = static_cast<const float*>(p) + i;
    if (n == 4) return _mm512_castps128_ps512(_mm_loadu_ps(f));
    return _mm512_castps128_ps512(_mm_setr_ps(f[0], n > 1 ? f[1] : 0.0f, n > 2 ? f[2] : 0.0f, 0.0f));
  }
}

// The scale of group g of row n at index i (float32 or float16).
template <bool HALF>
inline float scale512(const QArgs& a, int64_t i) {
  if constexpr (HALF) return _cvtsh_ss(static_cast<const uint16_t*>(a.s)[i]);
  else return static_cast<const float*>(a.s)[i];
}
// 16 biases from index i. Weights, scales and biases are read by plain loads of their own bytes:
// masked loads of data not yet in cache made the kernel 4x slower on Zen 4, and a tail copied to
// the stack stalls on store forwarding. Tails of fewer than 16 groups go through bias_tail.
template <bool HALF>
inline __m512 biases512(const QArgs& a, int64_t i) {
  if constexpr (HALF) return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(a.b) + i)));
  else return _mm512_loadu_ps(static_cast<const float*>(a.b) + i);
}
template <bool HALF>
inline float bias_tail(const QArgs& a, int64_t row, int64_t g, const float* xs) {  // groups g.. of the row, scalar
  float t = 0.0f;
  for (; g < a.G; ++g) {
    const int64_t i = row * a.G + g;
    t += (HALF ? _cvtsh_ss(static_cast<const uint16_t*>(a.b)[i]) : static_cast<const float*>(a.b)[i]) * xs[g];
  }
  return t;
}

// Rows ahead whose bytes are prefetched: a decode step streams 66 MB of weights that no cache holds,
// and the hardware prefetcher alone kept the kernels at 5-9 GB/s of this machine's ~20.
constexpr int64_t kAhead = 16;

// NR rows of W from n against MT rows of x from m0: NR x MT independent accumulator chains.
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
      const bool line = (k * BITS / 8) % 64 == 0;  // a new cache line of each row starts here
      for (int r = 0; r < NR; ++r) {
        if (line) _mm_prefetch(reinterpret_cast<const char*>(w0 + (r + kAhead) * bpr + k * BITS / 8), _MM_HINT_T0);
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
  int64_t g = 0;
  for (; g + 16 <= a.G; g += 16) {  // + biases . group sums of x, 16 groups a vector
    for (int r = 0; r < NR; ++r) {
      const __m512 bv = biases512<HALF>(a, (n + r) * a.G + g);
      for (int m = 0; m < MT; ++m) acc[r][m] = _mm512_fmadd_ps(bv, _mm512_loadu_ps(xs + (m0 + m) * a.G + g), acc[r][m]);
    }
  }
  for (int r = 0; r < NR; ++r)
    for (int m = 0; m < MT; ++m) {
      a.out[(m0 + m) * a.N + n + r] = _mm512_reduce_add_ps(acc[r][m]) + bias_tail<HALF>(a, n + r, g, xs + (m0 + m) * a.G);
    }
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

// 4-bit codes against one row of x (decode), lane-interleaved: a 64-byte load is 16 words holding
// 128 elements, word i elements 8i..8i+7, so shifting every word right by 4j leaves element 8i + j in
// lane i's low nibble. vpermps reads only an index's low 4 bits: with the table 0..15 it turns those
// nibbles into floats with no mask and no conversion. Per 32 codes that is ~6 vector ops where the
// block kernel above needs ~12, half of them its per-group scale. Here the scale is a vector (lane i
// takes the scale of its own group) applied once per 128 codes. x is reordered to match (ilv_x).
// Same sum as the kernel above (s * sum q x + b * sum x per group), added in another order.
inline int64_t ilv_len(int64_t K) { return (K + 127) / 128 * 128; }

void ilv_x(const float* x, int64_t K, float* xi) {  // xi[128 b + 16 j + i] = x[128 b + 8 i + j], 0 past K
  std::fill(xi, xi + ilv_len(K), 0.0f);
  for (int64_t k = 0; k < K; ++k) xi[(k & ~int64_t(127)) + 16 * (k % 8) + (k % 128) / 8] = x[k];
}

template <int NR, bool HALF>
void tile512_ilv(const QArgs& a, const float* xi, const float* xs, int gs, int64_t n) {
  const int64_t wpr = a.K / 8, blocks = (a.K + 127) / 128, per = 128 / gs;  // groups per full block
  const __m512 iota = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i lane_group = _mm512_srli_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                               gs == 32 ? 2 : gs == 64 ? 3 : 4);  // lane i's group in its block
  const uint32_t* w0 = a.w + n * wpr;
  const int64_t pbytes = HALF ? 2 : 4;  // the rows' scales and biases are two more streams to prefetch
  for (int r = 0; r < NR; ++r) {
    const int64_t at = (n + r + kAhead) * a.G * pbytes;
    for (int64_t off = 0; off < a.G * pbytes; off += 64) {
      _mm_prefetch(static_cast<const char*>(a.s) + at + off, _MM_HINT_T0);
      _mm_prefetch(static_cast<const char*>(a.b) + at + off, _MM_HINT_T0);
    }
  }
  __m512 acc[NR];
  for (int r = 0; r < NR; ++r) acc[r] = _mm512_setzero_ps();
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t words = std::min<int64_t>(16, wpr - blk * 16), g0 = blk * per;
    const int ng = static_cast<int>(std::min<int64_t>(per, a.G - g0));  // groups this block holds
    const float* xb = xi + blk * 128;
    for (int r = 0; r < NR; ++r) {
      const uint32_t* wb = w0 + r * wpr + blk * 16;
      __m512i v;  // a tail block (4, 8 or 12 words: K is a multiple of 32) loads exactly its words
      _mm_prefetch(reinterpret_cast<const char*>(wb + kAhead * wpr), _MM_HINT_T0);
      if (words == 16) v = _mm512_loadu_si512(wb);
      else if (words == 8) v = _mm512_zextsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(wb)));
      else if (words == 4) v = _mm512_zextsi128_si512(_mm_loadu_si128(reinterpret_cast<const __m128i*>(wb)));
      else v = _mm512_inserti32x4(_mm512_zextsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(wb))),
                                  _mm_loadu_si128(reinterpret_cast<const __m128i*>(wb + 8)), 2);
      __m512 t0 = _mm512_mul_ps(_mm512_permutexvar_ps(v, iota), _mm512_loadu_ps(xb));
      __m512 t1 = _mm512_mul_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(v, 4), iota), _mm512_loadu_ps(xb + 16));
      t0 = _mm512_fmadd_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(v, 8), iota), _mm512_loadu_ps(xb + 32), t0);
      t1 = _mm512_fmadd_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(v, 12), iota), _mm512_loadu_ps(xb + 48), t1);
      t0 = _mm512_fmadd_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(v, 16), iota), _mm512_loadu_ps(xb + 64), t0);
      t1 = _mm512_fmadd_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(v, 20), iota), _mm512_loadu_ps(xb + 80), t1);
      t0 = _mm512_fmadd_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(v, 24), iota), _mm512_loadu_ps(xb + 96), t0);
      t1 = _mm512_fmadd_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(v, 28), iota), _mm512_loadu_ps(xb + 112), t1);
      const __m512 sc = scales4<HALF>(a.s, (n + r) * a.G + g0, ng);
      acc[r] = _mm512_fmadd_ps(_mm512_add_ps(t0, t1), _mm512_permutexvar_ps(lane_group, sc), acc[r]);
    }
  }
  int64_t g = 0;
  for (; g + 16 <= a.G; g += 16) {  // + biases . group sums of x
    const __m512 xv = _mm512_loadu_ps(xs + g);
    for (int r = 0; r < NR; ++r) acc[r] = _mm512_fmadd_ps(biases512<HALF>(a, (n + r) * a.G + g), xv, acc[r]);
  }
  for (int r = 0; r < NR; ++r) a.out[n + r] = _mm512_reduce_add_ps(acc[r]) + bias_tail<HALF>(a, n + r, g, xs);
}

void range512_ilv(const QArgs& a, const float* xi, const float* xs, int gs, int64_t n0, int64_t n1) {
  int64_t n = n0;
  if (a.half) {
    for (; n + 4 <= n1; n += 4) tile512_ilv<4, true>(a, xi, xs, gs, n);
    for (; n < n1; ++n) tile512_ilv<1, true>(a, xi, xs, gs, n);
  } else {
    for (; n + 4 <= n1; n += 4) tile512_ilv<4, false>(a, xi, xs, gs, n);
    for (; n < n1; ++n) tile512_ilv<1, false>(a, xi, xs, gs, n);
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

bool qmv_run(const QArgs* mats, int count, int bits, int gs, int64_t align) {
  const int l = qmv_level(-1);
  if (l == 0) return false;
  const QArgs& a = mats[0];  // x, M, K and G are the same for every matrix
  std::vector<float> xp, xs;
  group_sums(a, gs, xs);
  const bool ilv = l == 2 && bits == 4 && a.M == 1;  // decode: the lane-interleaved kernel
  if (ilv) {
    xp.resize(ilv_len(a.K));
    ilv_x(a.x, a.K, xp.data());
  } else {
    reorder(a, bits, xp);
  }
  const float* x = bits == 4 ? xp.data() : a.x;
  auto rows = [&](const QArgs& m, int64_t lo, int64_t hi) {
    if (ilv) range512_ilv(m, x, xs.data(), gs, lo, hi);
    else if (l == 2) bits == 4 ? range512<4>(m, x, xs.data(), gs, lo, hi) : range512<8>(m, x, xs.data(), gs, lo, hi);
    else bits == 4 ? range256<4>(m, x, xs.data(), gs, lo, hi) : range256<8>(m, x, xs.data(), gs, lo, hi);
  };
  int64_t total = 0;
  for (int i = 0; i < count; ++i) total += mats[i].N;
  parallel_rows(total, align, [&](int64_t lo, int64_t hi) {  // the matrices' rows one after another
    int64_t first = 0;
    for (int i = 0; i < count; ++i) {
      const int64_t a0 = std::max(lo, first), a1 = std::min(hi, first + mats[i].N);
      if (a0 < a1) rows(mats[i], a0 - first, a1 - first);
      first += mats[i].N;
    }
  });
  return true;
}

}  // namespace lacy
