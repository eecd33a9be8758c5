// The document encoder's CPU row kernels, as MLX primitives: a softmax numerator, a LayerNorm and
// the exact GELU, each one pass (or two, over a row held in L1) instead of MLX's 3-8 passes.
//
// MLX's CPU backend on x86 runs reductions and unary math one element at a time, and each op it
// launches costs tens of microseconds; the plain-MLX twins in lacy_mlx.encoder.fastmath and
// lacy_mlx.encoder.packed chain several. Here each row is read once or twice while in cache,
// with 8-lane vectors (GCC/Clang vector extensions; on x86-64 with GCC a second clone for
// x86-64-v3, AVX2+FMA, picked at load time). Polynomials and constants are the twins' own.
//
// Built on first use by lacy_mlx.kernels.cpu_build against the installed MLX and nanobind.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <type_traits>
#include <vector>

#include <nanobind/nanobind.h>

#include "cpu_common.h"
#include "cpu_exp.h"

namespace mx = mlx::core;
namespace nb = nanobind;

void register_quant(nb::module_& m);   // cpu_quant.cpp
void register_decode(nb::module_& m);  // cpu_decode.cpp
void register_block(nb::module_& m);   // cpu_block.cpp
void register_gate(nb::module_& m);    // cpu_gate.cpp

namespace {

using namespace lacy;

// ---- exp2 of a row minus its max (exp2_nonpos, row_max: cpu_exp.h) ------------------------
// y[r, :] = 2^(x[r, :] - max x[r, :]); y may alias x.
LACY_CLONES void exp2_rows(const float* x, float* y, int64_t rows, int64_t n) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* a = x + r * n;
    float* b = y + r * n;
    const float m = row_max(a, n);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) store8(b + i, exp2_nonpos<f8, i8>(load8(a + i) - m));
    for (; i < n; ++i) b[i] = exp2_nonpos<float, int32_t>(a[i] - m);
  }
}

// ---- LayerNorm with statistics over a row's first n columns ------------------------------------
// y[r, j] = (x[r, j] - mean) * rstd * w[j] + b[j] for all cols columns; mean and variance (two
// passes, as the twin) over the first n. With w = [g, 0], b = [beta, 1] a ones column stays 1.
LACY_CLONES void layer_norm_rows(const float* x, const float* w, const float* b, float* y, int64_t rows,
                                 int64_t cols, int64_t n, float eps) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* a = x + r * cols;
    float* o = y + r * cols;
    f8 acc = {};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) acc += load8(a + i);
    float sum = hsum(acc);
    for (; i < n; ++i) sum += a[i];
    const float mean = sum / static_cast<float>(n);
    acc = f8{};
    for (i = 0; i + 8 <= n; i += 8) {
      f8 d = load8(a + i) - mean;
      acc += d * d;
    }
    float ss = hsum(acc);
    for (; i < n; ++i) ss += (a[i] - mean) * (a[i] - mean);
    const float rstd = 1.0f / std::sqrt(ss / static_cast<float>(n) + eps);
    for (i = 0; i + 8 <= cols; i += 8) store8(o + i, (load8(a + i) - mean) * rstd * load8(w + i) + load8(b + i));
    for (; i < cols; ++i) o[i] = (a[i] - mean) * rstd * w[i] + b[i];
  }
}

// ---- exact GELU: x Phi(x) with erf from Abramowitz & Stegun 7.1.28 ---------------------------------
// erf(u / sqrt 2) = 1 - p^-16, p = 1 + b1 u + ... + b6 u^6 (fastmath._B); |error| <= 2e-7 |x|.
constexpr float kB1 = 0.04986734697f, kB2 = 0.02114100615f, kB3 = 0.003277626324f, kB4 = 3.8003575e-05f,
                kB5 = 4.889063564e-05f, kB6 = 5.382975e-06f;

template <class V>
LACY_INLINE V gelu_erf(V x) {
  V u = x < 0.0f ? -x : x;
  V u2 = u * u;
  V p = ((1.0f + kB1 * u) + u2 * (kB2 + kB3 * u)) + (u2 * u2) * ((kB4 + kB5 * u) + u2 * kB6);
  p = p * p;
  p = p * p;
  p = p * p;
  p = p * p;  // p^16; an overflow to inf gives erf = 1 exactly
  return 0.5f * ((x + u) - u / p);
}

LACY_CLONES void gelu_rows(const float* x, float* y, int64_t size) {
  int64_t i = 0;
  for (; i + 8 <= size; i += 8) store8(y + i, gelu_erf(load8(x + i)));
  for (; i < size; ++i) y[i] = gelu_erf(x[i]);
}

// ---- the primitives ------------------------------------------------------------------------------
// Gives out a buffer: a donatable, row-contiguous input's, else a fresh one. Call before taking
// out.data<>() for a task.
void allocate(const mx::array& x, mx::array& out) {
  if (x.is_donatable() && x.flags().row_contiguous && x.dtype() == out.dtype()) {
    out.copy_shared_buffer(x);
  } else {
    out.set_data(mx::allocator::malloc(out.nbytes()));
  }
}

class RowPrimitive : public mx::UnaryPrimitive {
 public:
  using mx::UnaryPrimitive::UnaryPrimitive;
  void eval_gpu(const std::vector<mx::array>&, mx::array&) override {
    throw std::runtime_error(std::string("[") + name() + "] runs on the CPU only; GPUs use the plain-MLX twin.");
  }
  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>& inputs) override {
    return {inputs[0].shape()};
  }
};

class Exp2RowShift : public RowPrimitive {
 public:
  using RowPrimitive::RowPrimitive;
  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override {
    const mx::array& x = inputs[0];
    const int64_t n = x.ndim() ? x.shape().back() : 1;
    const int64_t rows = n ? static_cast<int64_t>(x.size()) / n : 0;
    allocate(x, out);
    dispatch(stream(), inputs, out, [src = x.data<float>(), dst = out.data<float>(), rows, n, x]() {
      exp2_rows(src, dst, rows, n);
    });
  }
  // The shift is a constant of the gradient, as in every softmax: exact once rows are normalised.
  std::vector<mx::array> vjp(const std::vector<mx::array>&, const std::vector<mx::array>& cotangents,
                             const std::vector<int>&, const std::vector<mx::array>& outputs) override {
    return {mx::multiply(mx::multiply(cotangents[0], outputs[0], stream()),
                         mx::array(static_cast<float>(M_LN2)), stream())};
  }
  const char* name() const override { return "Exp2RowShift"; }
  bool is_equivalent(const mx::Primitive&) const override { return true; }
};

class LayerNormRows : public RowPrimitive {
 public:
  LayerNormRows(mx::Stream stream, int64_t n, float eps) : RowPrimitive(stream), n_(n), eps_(eps) {}
  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override {
    const mx::array& x = inputs[0];
    const int64_t cols = x.shape().back();
    const int64_t rows = cols ? static_cast<int64_t>(x.size()) / cols : 0;
    allocate(x, out);
    dispatch(stream(), inputs, out,
             [src = x.data<float>(), w = inputs[1].data<float>(), b = inputs[2].data<float>(),
              dst = out.data<float>(), rows, cols, n = n_, eps = eps_, x, wa = inputs[1], ba = inputs[2]]() {
               layer_norm_rows(src, w, b, dst, rows, cols, n, eps);
             });
  }
  const char* name() const override { return "LayerNormRows"; }
  bool is_equivalent(const mx::Primitive& other) const override {
    const auto& o = static_cast<const LayerNormRows&>(other);
    return n_ == o.n_ && eps_ == o.eps_;
  }

 private:
  int64_t n_;
  float eps_;
};

class GeluErf : public RowPrimitive {
 public:
  using RowPrimitive::RowPrimitive;
  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override {
    const mx::array& x = inputs[0];
    allocate(x, out);
    dispatch(stream(), inputs, out,
             [src = x.data<float>(), dst = out.data<float>(), size = int64_t(x.size()), x]() { gelu_rows(src, dst, size); });
  }
  // d/dx x Phi(x) = Phi(x) + x phi(x), in plain MLX ops.
  std::vector<mx::array> vjp(const std::vector<mx::array>& primals, const std::vector<mx::array>& cotangents,
                             const std::vector<int>&, const std::vector<mx::array>&) override {
    auto s = stream();
    const mx::array& x = primals[0];
    auto erf = mx::erf(mx::multiply(x, mx::array(float(M_SQRT1_2)), s), s);
    auto cdf = mx::multiply(mx::array(0.5f), mx::add(mx::array(1.0f), erf, s), s);
    auto pdf = mx::multiply(mx::array(float(0.5 * M_2_SQRTPI * M_SQRT1_2)),
                            mx::exp(mx::multiply(mx::array(-0.5f), mx::square(x, s), s), s), s);
    return {mx::multiply(cotangents[0], mx::add(cdf, mx::multiply(x, pdf, s), s), s)};
  }
  const char* name() const override { return "GeluErf"; }
  bool is_equivalent(const mx::Primitive&) const override { return true; }
};

// ---- ops ----------------------------------------------------------------------------------------
mx::array exp2_rowshift(const mx::array& x) {
  require_f32(x, "exp2_rowshift", "scores");
  mx::Stream s = cpu_stream("exp2_rowshift");
  return mx::array(x.shape(), mx::float32, std::make_shared<Exp2RowShift>(s), {dense(x, s)});
}

mx::array layer_norm_rows_op(const mx::array& x, const mx::array& weight, const mx::array& bias, float eps,
                             int64_t n) {
  for (const auto* a : {&x, &weight, &bias}) require_f32(*a, "layer_norm_rows", "inputs");
  const int64_t cols = x.ndim() ? x.shape().back() : 0;
  if (x.ndim() < 1 || weight.ndim() != 1 || bias.ndim() != 1 || weight.shape(0) != cols ||
      bias.shape(0) != cols || n < 1 || n > cols) {
    throw std::invalid_argument(
        "[layer_norm_rows] needs x (..., C), weight (C,), bias (C,) and 1 <= n <= C statistics columns.");
  }
  mx::Stream s = cpu_stream("layer_norm_rows");
  return mx::array(x.shape(), mx::float32, std::make_shared<LayerNormRows>(s, n, eps),
                   {dense(x, s), dense(weight, s), dense(bias, s)});
}

mx::array gelu_erf_op(const mx::array& x) {
  require_f32(x, "gelu_erf", "inputs");
  mx::Stream s = cpu_stream("gelu_erf");
  return mx::array(x.shape(), mx::float32, std::make_shared<GeluErf>(s), {dense(x, s)});
}

}  // namespace

NB_MODULE(_lacy_cpu_kernels, m) {
  nb::module_::import_("mlx.core");  // registers mlx.core.array with nanobind before any call
  m.def("exp2_rowshift", &exp2_rowshift, nb::arg("x"),
        "2^(x - max over the last axis) of a float32 array, on the default (CPU) stream.");
  m.def("layer_norm_rows", &layer_norm_rows_op, nb::arg("x"), nb::arg("weight"), nb::arg("bias"), nb::arg("eps"),
        nb::arg("n"),
        "(x - mean) * rstd * weight + bias over x's last axis, mean and variance over its first n columns.");
  m.def("gelu_erf", &gelu_erf_op, nb::arg("x"), "Exact (erf) GELU of a float32 array, |error| <= 2e-7 |x|.");
  register_quant(m);
  register_decode(m);
  register_block(m);
  register_gate(m);
}
