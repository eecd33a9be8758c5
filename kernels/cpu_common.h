// What the CPU kernel files share: 8-lane float vectors, the ISA clone attribute, and the glue that
// queues a task on MLX's CPU command encoder.
#pragma once

#include <cstdint>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include "mlx/allocator.h"
#include "mlx/backend/cpu/encoder.h"
#include "mlx/mlx.h"
#include "mlx/primitives.h"

namespace lacy {

namespace mx = mlx::core;

typedef float f8 __attribute__((vector_size(32)));
typedef int32_t i8 __attribute__((vector_size(32)));
typedef uint32_t u8 __attribute__((vector_size(32)));

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define LACY_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define LACY_CLONES
#endif
#define LACY_INLINE __attribute__((always_inline)) inline

LACY_INLINE f8 load8(const float* p) {
  f8 v;
  std::memcpy(&v, p, sizeof(f8));
  return v;
}
LACY_INLINE void store8(float* p, f8 v) { std::memcpy(p, &v, sizeof(f8)); }
LACY_INLINE float hsum(f8 v) {
  float s = 0.0f;
  for (int j = 0; j < 8; ++j) s += v[j];
  return s;
}

// Queues fn on the stream's CPU command encoder (the task captures its inputs, keeping them alive).
template <class F>
void dispatch(mx::Stream stream, const std::vector<mx::array>& inputs, mx::array& out, F&& fn) {
  auto& encoder = mx::cpu::get_command_encoder(stream);
  for (const auto& in : inputs) encoder.set_input_array(in);
  encoder.set_output_array(out);
  encoder.dispatch(std::forward<F>(fn));
}

// Runs fn(lo, hi) over [0, n) split over the quantized kernels' thread pool in slices of multiples
// of `align` (cpu_quant.cpp; one slice inline when set to one thread or n < 2 * align).
void parallel_rows(int64_t n, int64_t align, const std::function<void(int64_t, int64_t)>& fn);

inline mx::Stream cpu_stream(const char* op) {
  mx::Stream stream = mx::default_stream(mx::default_device());
  if (stream.device != mx::Device::cpu) {
    throw std::invalid_argument(std::string("[") + op + "] runs on the CPU only; call it under a CPU stream.");
  }
  return stream;
}

// x as a row-contiguous input. mx::contiguous always adds an op, a scheduled task even when it has
// nothing to copy: wrapping each weight that way had made a decode step ~750 tasks longer. An array
// already evaluated and dense (a model's parameters) is passed as it is.
inline mx::array dense(const mx::array& x, mx::Stream s) {
  if (x.status() != mx::array::Status::unscheduled && x.flags().row_contiguous) return x;
  return mx::contiguous(x, false, s);
}

inline void require_f32(const mx::array& x, const char* op, const char* what) {
  if (x.dtype() != mx::float32) {
    throw std::invalid_argument(std::string("[") + op + "] expects float32 " + what + "; cast them first.");
  }
}

}  // namespace lacy
