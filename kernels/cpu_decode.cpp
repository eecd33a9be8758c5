// A llama decoder layer's non-matmul ops as MLX primitives for the CPU: RMSNorm, rope, attention
// (one query row or a causal block, grouped heads, read from the KV cache's strided view) and
// SiLU(gate) * up.
//
// On the CPU MLX 0.32 runs mx.fast.rms_norm, rope and scaled_dot_product_attention as their
// fallbacks: 6, ~15 and ~8 plain ops, each a scheduled task, and exp/sin/cos one element at a time.
// A decode step of SmolLM2 (30 layers) issued ~1,000 such ops around its 211 matrix products.
// Here each is one task: rows read once while in cache, 8-lane vectors, the encoder's exp2
// (cpu_exp.h). The plain-MLX twins are the mx.fast ops themselves (the gradients go through them).
#include <cmath>
#include <memory>
#include <vector>

#include <nanobind/nanobind.h>

#include "cpu_decode.h"
#include "cpu_exp.h"

namespace nb = nanobind;

namespace lacy {

namespace {
constexpr float kLog2e = 1.4426950408889634f;
}  // namespace

// ---- RMSNorm: y = x / sqrt(mean(x^2) + eps) * w, over the last axis -------------------------------
LACY_CLONES void rms_rows(const float* x, const float* w, float* y, int64_t rows, int64_t n, float eps) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* a = x + r * n;
    float* o = y + r * n;
    f8 acc = {};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) acc += load8(a + i) * load8(a + i);
    float ss = hsum(acc);
    for (; i < n; ++i) ss += a[i] * a[i];
    const float inv = 1.0f / std::sqrt(ss / static_cast<float>(n) + eps);
    for (i = 0; i + 8 <= n; i += 8) store8(o + i, (load8(a + i) * inv) * load8(w + i));
    for (; i < n; ++i) o[i] = (a[i] * inv) * w[i];
  }
}

// ---- SiLU(g) * u: g * sigmoid(g) * u, sigmoid from e^-|g| (always <= 1, no overflow) ----------------
namespace {
template <class V, class I>
LACY_INLINE V silu_mul(V g, V u) {
  const V e = exp2_nonpos<V, I>((g < 0.0f ? g : -g) * kLog2e);
  const V sig = g < 0.0f ? e / (1.0f + e) : 1.0f / (1.0f + e);
  return (g * sig) * u;
}
}  // namespace

LACY_CLONES void silu_mul_rows(const float* g, const float* u, float* y, int64_t size) {
  int64_t i = 0;
  for (; i + 8 <= size; i += 8) store8(y + i, silu_mul<f8, i8>(load8(g + i), load8(u + i)));
  for (; i < size; ++i) y[i] = silu_mul<float, int32_t>(g[i], u[i]);
}

// ---- strided 4-D views (B, H, T, D) -----------------------------------------------------------------
// A view of x whose last axis is contiguous; otherwise (a transposed last axis) x gathered into buf.
View view_of(const mx::array& x, std::vector<float>& buf) {
  const auto& st = x.strides();
  if (st[3] == 1) return {x.data<float>(), st[0], st[1], st[2]};
  const int64_t B = x.shape(0), H = x.shape(1), T = x.shape(2), D = x.shape(3);
  buf.resize(B * H * T * D);
  const float* src = x.data<float>();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t t = 0; t < T; ++t)
        for (int64_t d = 0; d < D; ++d)
          buf[((b * H + h) * T + t) * D + d] = src[b * st[0] + h * st[1] + t * st[2] + d * st[3]];
  return {buf.data(), H * T * D, T * D, D};
}

// ---- rope (non-traditional: the first and second halves of `dims` are the pairs) --------------------
// theta[t, i] = (t + offset) * scale * inv_freq[i], as MLX's fallback (inv_freq from its own ops).
void rope_rows(const View& x, const float* inv_freq, float* y, int64_t B, int64_t H, int64_t T, int64_t D,
               int64_t dims, int64_t offset, float scale) {
  const int64_t half = dims / 2;
  std::vector<float> cs(T * half), sn(T * half);
  for (int64_t t = 0; t < T; ++t) {
    const float pos = (static_cast<float>(t) + static_cast<float>(offset)) * scale;
    for (int64_t i = 0; i < half; ++i) {
      const float theta = pos * inv_freq[i];
      cs[t * half + i] = std::cos(theta);
      sn[t * half + i] = std::sin(theta);
    }
  }
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t t = 0; t < T; ++t) {
        const float* a = x.row(b, h, t);
        float* o = y + ((b * H + h) * T + t) * D;
        const float* c = cs.data() + t * half;
        const float* s = sn.data() + t * half;
        for (int64_t i = 0; i < half; ++i) {
          const float x1 = a[i], x2 = a[i + half];
          o[i] = x1 * c[i] - x2 * s[i];
          o[i + half] = x1 * s[i] + x2 * c[i];
        }
        for (int64_t i = dims; i < D; ++i) o[i] = a[i];
      }
}

// ---- attention: softmax(q k^T * scale [causal]) v, grouped heads --------------------------------
namespace {
LACY_INLINE float dot(const float* a, const float* b, int64_t n) {
  f8 acc = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) acc += load8(a + i) * load8(b + i);
  float s = hsum(acc);
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}
}  // namespace

namespace {
// Query row i of head h (kv head g) of batch b; p and acc are scratch of T and D floats.
LACY_INLINE void attend_row(const Attn& a, int64_t b, int64_t h, int64_t g, int64_t i, float* p, float* acc) {
  const int64_t D = a.D;
  const int64_t n = a.causal ? a.T - a.L + i + 1 : a.T;  // the op refuses causal with T < L
  const float c = a.scale * kLog2e;  // scores in base 2: exp(s) = 2^(s log2 e)
  const float* qr = a.q.row(b, h, i);
  float* o = a.out + ((b * a.Hq + h) * a.L + i) * D;
  for (int64_t j = 0; j < n; ++j) p[j] = dot(qr, a.k.row(b, g, j), D) * c;
  const float m = row_max(p, n);
  float sum = 0.0f;
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const f8 e = exp2_nonpos<f8, i8>(load8(p + j) - m);
    store8(p + j, e);
    sum += hsum(e);
  }
  for (; j < n; ++j) sum += (p[j] = exp2_nonpos<float, int32_t>(p[j] - m));
  std::fill(acc, acc + D, 0.0f);
  for (j = 0; j < n; ++j) {
    const float* vr = a.v.row(b, g, j);
    const float w = p[j];
    int64_t d = 0;
    for (; d + 8 <= D; d += 8) store8(acc + d, load8(acc + d) + w * load8(vr + d));
    for (; d < D; ++d) acc[d] += w * vr[d];
  }
  const float inv = 1.0f / sum;
  for (int64_t d = 0; d < D; ++d) o[d] = acc[d] * inv;
}
}  // namespace

// Items [lo, hi) of (b, query head, query row); head h reads kv head h / (Hq / Hk).
LACY_CLONES void attend_range(const Attn& a, int64_t lo, int64_t hi) {
  const int64_t R = a.Hq / a.Hk;
  std::vector<float> p(a.T), acc(a.D);
  for (int64_t item = lo; item < hi; ++item) {
    const int64_t i = item % a.L, h = (item / a.L) % a.Hq, b = item / (a.L * a.Hq);
    attend_row(a, b, h, h / R, i, p.data(), acc.data());
  }
}

}  // namespace lacy

namespace {

using namespace lacy;

// ---- the primitives ---------------------------------------------------------------------------------
// Each one's gradient is its twin's (mx.fast's fallback ops), through mx::vjp.
using Twin = std::function<std::vector<mx::array>(const std::vector<mx::array>&)>;

class DecodePrimitive : public mx::UnaryPrimitive {
 public:
  using mx::UnaryPrimitive::UnaryPrimitive;
  void eval_gpu(const std::vector<mx::array>&, mx::array&) override {
    throw std::runtime_error(std::string("[") + name() + "] runs on the CPU only; GPUs use the mx.fast op.");
  }
  std::vector<mx::array> vjp(const std::vector<mx::array>& primals, const std::vector<mx::array>& cotangents,
                             const std::vector<int>& argnums, const std::vector<mx::array>&) override {
    auto grads = mx::vjp(twin(), primals, cotangents).second;
    std::vector<mx::array> out;
    for (int i : argnums) out.push_back(grads[i]);
    return out;
  }
  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>& inputs) override { return {inputs[0].shape()}; }

 protected:
  virtual Twin twin() = 0;
};

void fresh(mx::array& out) { out.set_data(mx::allocator::malloc(out.nbytes())); }

class RmsNorm : public DecodePrimitive {
 public:
  RmsNorm(mx::Stream s, float eps) : DecodePrimitive(s), eps_(eps) {}
  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override {
    const mx::array& x = inputs[0];
    const int64_t n = x.shape().back(), rows = n ? static_cast<int64_t>(x.size()) / n : 0;
    fresh(out);
    dispatch(stream(), inputs, out, [x, w = inputs[1], y = out.data<float>(), rows, n, eps = eps_]() {
      rms_rows(x.data<float>(), w.data<float>(), y, rows, n, eps);
    });
  }
  const char* name() const override { return "LacyRmsNorm"; }
  bool is_equivalent(const mx::Primitive& o) const override { return eps_ == static_cast<const RmsNorm&>(o).eps_; }

 protected:
  Twin twin() override {
    return [eps = eps_, s = stream()](const std::vector<mx::array>& in) {
      return std::vector<mx::array>{mx::fast::rms_norm(in[0], in[1], eps, s)};
    };
  }
  float eps_;
};

class SiluMul : public DecodePrimitive {
 public:
  using DecodePrimitive::DecodePrimitive;
  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override {
    fresh(out);
    dispatch(stream(), inputs, out, [g = inputs[0], u = inputs[1], y = out.data<float>(), n = int64_t(out.size())]() {
      silu_mul_rows(g.data<float>(), u.data<float>(), y, n);
    });
  }
  const char* name() const override { return "LacySiluMul"; }
  bool is_equivalent(const mx::Primitive&) const override { return true; }

 protected:
  Twin twin() override {
    return [s = stream()](const std::vector<mx::array>& in) {
      return std::vector<mx::array>{mx::multiply(mx::multiply(in[0], mx::sigmoid(in[0], s), s), in[1], s)};
    };
  }
};

class Rope : public DecodePrimitive {
 public:
  Rope(mx::Stream s, int dims, float base, float scale, int offset)
      : DecodePrimitive(s), dims_(dims), base_(base), scale_(scale), offset_(offset) {}
  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override {
    fresh(out);
    dispatch(stream(), inputs, out,
             [x = inputs[0], f = inputs[1], y = out.data<float>(), dims = dims_, scale = scale_, offset = offset_]() {
               std::vector<float> buf;
               const View v = view_of(x, buf);
               rope_rows(v, f.data<float>(), y, x.shape(0), x.shape(1), x.shape(2), x.shape(3), dims, offset, scale);
             });
  }
  const char* name() const override { return "LacyRope"; }
  bool is_equivalent(const mx::Primitive& other) const override {
    const auto& o = static_cast<const Rope&>(other);
    return dims_ == o.dims_ && base_ == o.base_ && scale_ == o.scale_ && offset_ == o.offset_;
  }

 protected:
  Twin twin() override {
    return [dims = dims_, base = base_, scale = scale_, offset = offset_, s = stream()](const std::vector<mx::array>& in) {
      return std::vector<mx::array>{mx::fast::rope(in[0], dims, false, base, scale, offset, std::nullopt, s)};
    };
  }
  int dims_;
  float base_, scale_;
  int offset_;
};

class Attention : public DecodePrimitive {
 public:
  Attention(mx::Stream s, float scale, bool causal) : DecodePrimitive(s), scale_(scale), causal_(causal) {}
  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override {
    fresh(out);
    dispatch(stream(), inputs, out,
             [q = inputs[0], k = inputs[1], v = inputs[2], y = out.data<float>(), scale = scale_, causal = causal_]() {
               std::vector<float> qb, kb, vb;
               const Attn a{view_of(q, qb), view_of(k, kb), view_of(v, vb), y,     q.shape(0), q.shape(1),
                            k.shape(1),     q.shape(2),     k.shape(2),     q.shape(3), scale, causal};
               const int64_t items = a.B * a.Hq * a.L;
               if (a.L < 8) {
                 attend_range(a, 0, items);  // a decode step: a few microseconds, no hand-off
               } else {
                 parallel_rows(items, 1, [&](int64_t lo, int64_t hi) { attend_range(a, lo, hi); });
               }
             });
  }
  const char* name() const override { return "LacyAttention"; }
  bool is_equivalent(const mx::Primitive& other) const override {
    const auto& o = static_cast<const Attention&>(other);
    return scale_ == o.scale_ && causal_ == o.causal_;
  }

 protected:
  Twin twin() override {
    return [scale = scale_, causal = causal_, s = stream()](const std::vector<mx::array>& in) {
      return std::vector<mx::array>{mx::fast::scaled_dot_product_attention(in[0], in[1], in[2], scale,
                                                                           causal ? "causal" : "", {}, {}, false, s)};
    };
  }
  float scale_;
  bool causal_;
};

// ---- ops --------------------------------------------------------------------------------------------
mx::array rms_norm_op(const mx::array& x, const mx::array& w, float eps) {
  require_f32(x, "rms_norm", "inputs");
  require_f32(w, "rms_norm", "weights");
  if (x.ndim() < 1 || w.ndim() != 1 || w.shape(0) != x.shape().back()) {
    throw std::invalid_argument("[rms_norm] needs x (..., C) and weight (C,).");
  }
  mx::Stream s = cpu_stream("rms_norm");
  return mx::array(x.shape(), mx::float32, std::make_shared<RmsNorm>(s, eps),
                   {dense(x, s), dense(w, s)});
}

mx::array silu_mul_op(const mx::array& g, const mx::array& u) {
  require_f32(g, "silu_mul", "gates");
  require_f32(u, "silu_mul", "inputs");
  if (g.shape() != u.shape()) throw std::invalid_argument("[silu_mul] gate and up must have the same shape.");
  mx::Stream s = cpu_stream("silu_mul");
  return mx::array(g.shape(), mx::float32, std::make_shared<SiluMul>(s),
                   {dense(g, s), dense(u, s)});
}

mx::array rope_op(const mx::array& x, int dims, float base, float scale, int offset, const mx::array& inv_freq) {
  require_f32(x, "rope", "inputs");
  require_f32(inv_freq, "rope", "inverse frequencies");
  if (x.ndim() != 4 || dims < 2 || dims % 2 || dims > x.shape(3) || inv_freq.ndim() != 1 ||
      inv_freq.shape(0) != dims / 2 || offset < 0) {
    throw std::invalid_argument("[rope] needs x (B, H, T, D), even dims <= D, inv_freq (dims / 2,), offset >= 0.");
  }
  mx::Stream s = cpu_stream("rope");
  return mx::array(x.shape(), mx::float32, std::make_shared<Rope>(s, dims, base, scale, offset),
                   {x, dense(inv_freq, s)});
}

mx::array attention_op(const mx::array& q, const mx::array& k, const mx::array& v, float scale, bool causal) {
  for (const auto* a : {&q, &k, &v}) require_f32(*a, "attention", "queries, keys and values");
  if (q.ndim() != 4 || k.ndim() != 4 || v.shape() != k.shape() || q.shape(0) != k.shape(0) ||
      q.shape(3) != k.shape(3) || k.shape(1) < 1 || q.shape(1) % k.shape(1) != 0) {
    throw std::invalid_argument(
        "[attention] needs q (B, Hq, L, D), k and v (B, Hk, T, D) with Hq a multiple of Hk.");
  }
  if (causal && q.shape(2) > k.shape(2)) {
    throw std::invalid_argument("[attention] causal attention needs at least as many keys as queries.");
  }
  mx::Stream s = cpu_stream("attention");
  return mx::array(q.shape(), mx::float32, std::make_shared<Attention>(s, scale, causal), {q, k, v});
}

}  // namespace

void register_decode(nb::module_& m) {
  m.def("rms_norm", &rms_norm_op, nb::arg("x"), nb::arg("weight"), nb::arg("eps"),
        "mx.fast.rms_norm of float32 x over its last axis (CPU stream).");
  m.def("silu_mul", &silu_mul_op, nb::arg("gate"), nb::arg("up"), "silu(gate) * up, float32 (CPU stream).");
  m.def("rope", &rope_op, nb::arg("x"), nb::arg("dims"), nb::arg("base"), nb::arg("scale"), nb::arg("offset"),
        nb::arg("inv_freq"),
        "mx.fast.rope (non-traditional) of float32 x (B, H, T, D) at positions offset.. (CPU stream).");
  m.def("attention", &attention_op, nb::arg("q"), nb::arg("k"), nb::arg("v"), nb::arg("scale"), nb::arg("causal"),
        "mx.fast.scaled_dot_product_attention of float32 q, k, v (B, H, T, D), no mask or causal (CPU stream).");
}
