// 2^t for t <= 0 and a row's maximum: the vectorised exp the encoder's softmax introduced
// (cpu_encoder.cpp), shared with the decoder's attention and SiLU (cpu_decode.cpp).
#pragma once

#include <cmath>
#include <type_traits>

#include "cpu_common.h"

namespace lacy {

constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: (y + kRound) - kRound rounds to an integer
// 2^f on |f| <= 1/2 (lacy_mlx.encoder.fastmath._EXP2_C), Estrin form below.
constexpr float kC0 = 1.000000071029699f, kC1 = 0.6931469491610645f, kC2 = 0.24022121753561687f,
                kC3 = 0.05550742616002223f, kC4 = 0.009675459745521559f,
                kC5 = 0.0013266970386470525f;

// 2^t for t <= 0 (t below -126 gives 2^-126), one float or 8 lanes.
template <class V, class I>
LACY_INLINE V exp2_nonpos(V t) {
  t = t < -126.0f ? -126.0f + V{} : t;
  V k = (t + kRound) - kRound;
  V f = t - k;
  V f2 = f * f;
  V p = ((kC0 + kC1 * f) + f2 * (kC2 + kC3 * f)) + (f2 * f2) * (kC4 + kC5 * f);
  I bits;
  if constexpr (std::is_same_v<V, float>) {
    bits = (static_cast<int32_t>(k) + 127) << 23;
  } else {
    bits = (__builtin_convertvector(k, I) + 127) << 23;
  }
  V scale;
  std::memcpy(&scale, &bits, sizeof(V));
  return p * scale;
}

LACY_INLINE float row_max(const float* a, int64_t n) {
  float m = -INFINITY;
  int64_t i = 0;
  if (n >= 8) {
    f8 acc = load8(a);
    for (i = 8; i + 8 <= n; i += 8) {
      f8 v = load8(a + i);
      acc = v > acc ? v : acc;
    }
    for (int j = 0; j < 8; ++j) m = acc[j] > m ? acc[j] : m;
  }
  for (; i < n; ++i) m = a[i] > m ? a[i] : m;
  return m;
}

}  // namespace lacy
