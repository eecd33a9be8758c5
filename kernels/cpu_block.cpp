// A whole llama decoder block for one decode token as one MLX primitive on the CPU: RMSNorm, the
// q/k/v projections, rope, the new key and value written into the KV cache's buffer, attention over
// the cache, the output projection and residual, RMSNorm, SwiGLU and its residual.
//
// With every op of a layer its own primitive, a SmolLM2 decode step was still ~500 MLX tasks, and
// scheduling them cost more than the products themselves (docs/cpu-speed.md). Here a layer is one
// task. It runs the same row kernels as the one-op primitives (cpu_decode.h, cpu_quant.h) in the
// same order, so its floats are theirs.
//
// The cache: mlx-lm's KVCache holds (1, Hk, capacity, D) buffers and a fill offset. The task writes
// the new row at `offset` into those buffers in place (llama.cpp's KV cache does the same), instead
// of returning a new buffer: MLX's pending-task bookkeeping holds the previous step's buffers while
// the next step is scheduled, so a functional update could not reuse them and would copy the whole
// cache every step. Rows below `offset` are never written, so views of them stay valid. The caller
// (lacy_mlx/runtime/cpu_layers.py) advances the cache's offset.
#include <algorithm>
#include <array>
#include <memory>
#include <vector>

#include <nanobind/nanobind.h>
#include <nanobind/stl/vector.h>

#include "cpu_common.h"
#include "cpu_decode.h"
#include "cpu_quant.h"

namespace nb = nanobind;

namespace {

using namespace lacy;

constexpr int kProj = 7;  // q, k, v, o, gate, up, down
constexpr int kFirstWeight = 6;
constexpr int64_t kThreadedAttention = 1 << 17;  // query heads x keys x head dim; below, one thread  // inputs: x, keys, values, inv_freq, norm weights (2), then (w, s, b) x 7

struct BlockShape {
  int64_t C, F, Hq, Hk, D;  // hidden size, MLP width, query heads, kv heads, head dim
  int dims;                 // rope dims
  float rope_scale, attn_scale, eps_in, eps_post;
  std::array<int, kProj> bits, group;
};

class BlockStep : public mx::UnaryPrimitive {
 public:
  BlockStep(mx::Stream s, BlockShape shape, int offset) : mx::UnaryPrimitive(s), sh_(shape), offset_(offset) {}

  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override {
    for (int i : {1, 2}) {
      if (!inputs[i].flags().row_contiguous) {
        throw std::runtime_error("[decoder_block] the KV cache buffer is not row-contiguous; "
                                 "use mlx-lm's KVCache (its buffers always are).");
      }
    }
    out.set_data(mx::allocator::malloc(out.nbytes()));
    auto& encoder = mx::cpu::get_command_encoder(stream());
    for (const auto& in : inputs) encoder.set_input_array(in);
    encoder.set_output_array(out);
    encoder.dispatch([in = inputs, y = out.data<float>(), sh = sh_, offset = offset_]() { run(in, y, sh, offset); });
  }

  void eval_gpu(const std::vector<mx::array>&, mx::array&) override {
    throw std::runtime_error("[decoder_block] runs on the CPU only; GPUs run the model's own layers.");
  }
  std::vector<mx::array> vjp(const std::vector<mx::array>&, const std::vector<mx::array>&, const std::vector<int>&,
                             const std::vector<mx::array>&) override {
    throw std::invalid_argument("[decoder_block] is a decode-step kernel with no gradient; train through the model's layers.");
  }
  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>& inputs) override { return {inputs[0].shape()}; }
  const char* name() const override { return "LacyDecoderBlock"; }
  // Never merged with another call: each writes its own cache row.
  bool is_equivalent(const mx::Primitive&) const override { return false; }

 private:
  static QArgs args(const std::vector<mx::array>& in, int j, const float* x, float* y, int64_t N, int64_t K,
                    const BlockShape& sh) {
    const mx::array& s = in[kFirstWeight + 3 * j + 1];
    return {x, in[kFirstWeight + 3 * j].data<uint32_t>(), s.data<void>(), in[kFirstWeight + 3 * j + 2].data<void>(), y,
            1, N, K, K / sh.group[j], s.dtype() == mx::float16};
  }

  // Projections j0.. of one input, in one parallel region when their widths, groups and scale types agree.
  static void project(const BlockShape& sh, const QArgs* mats, int j0, int count) {
    bool same = true;
    for (int i = 1; i < count; ++i) {
      same = same && sh.bits[j0 + i] == sh.bits[j0] && sh.group[j0 + i] == sh.group[j0] && mats[i].half == mats[0].half;
    }
    if (same) return quantized_products(mats, count, sh.bits[j0], sh.group[j0]);
    for (int i = 0; i < count; ++i) quantized_product(mats[i], sh.bits[j0 + i], sh.group[j0 + i]);
  }

  static void run(const std::vector<mx::array>& in, float* y, const BlockShape& sh, int64_t offset) {
    const int64_t C = sh.C, F = sh.F, Hq = sh.Hq, Hk = sh.Hk, D = sh.D, A = in[1].shape(2);
    thread_local std::vector<float> buf;
    buf.resize(C + Hq * D * 2 + Hk * D * 2 + 2 * F + 2 * C);
    float* h = buf.data();
    float* q = h + C;
    float* att = q + Hq * D;
    float* k = att + Hq * D;
    float* v = k + Hk * D;
    float* g = v + Hk * D;
    float* u = g + F;
    float* t = u + F;
    const float* x = in[0].data<float>();
    if (!in[0].flags().row_contiguous) {  // x comes as it is: a contiguous op would be one more task a layer
      float* xd = t + C;
      const int64_t stride = in[0].strides().back();
      for (int64_t i = 0; i < C; ++i) xd[i] = x[i * stride];
      x = xd;
    }
    float* kc = const_cast<float*>(in[1].data<float>());  // written in place: see the top of this file
    float* vc = const_cast<float*>(in[2].data<float>());

    rms_rows(x, in[4].data<float>(), h, 1, C, sh.eps_in);
    const QArgs qkv[3] = {args(in, 0, h, q, Hq * D, C, sh), args(in, 1, h, k, Hk * D, C, sh), args(in, 2, h, v, Hk * D, C, sh)};
    project(sh, qkv, 0, 3);
    const float* inv_freq = in[3].data<float>();
    rope_rows({q, Hq * D, D, D}, inv_freq, q, 1, Hq, 1, D, sh.dims, offset, sh.rope_scale);
    rope_rows({k, Hk * D, D, D}, inv_freq, k, 1, Hk, 1, D, sh.dims, offset, sh.rope_scale);
    for (int64_t j = 0; j < Hk; ++j) {
      std::copy(k + j * D, k + (j + 1) * D, kc + (j * A + offset) * D);
      std::copy(v + j * D, v + (j + 1) * D, vc + (j * A + offset) * D);
    }
    const Attn a{{q, Hq * D, D, D}, {kc, Hk * A * D, A * D, D}, {vc, Hk * A * D, A * D, D}, att, 1, Hq, Hk, 1,
                 offset + 1, D, sh.attn_scale, false};
    if (Hq * (offset + 1) * D >= kThreadedAttention) {  // a long context: its heads split over the threads
      parallel_rows(Hq, 1, [&](int64_t lo, int64_t hi) { attend_range(a, lo, hi); });
    } else {
      attend_range(a, 0, Hq);
    }
    const QArgs o = args(in, 3, att, t, C, Hq * D, sh);
    project(sh, &o, 3, 1);
    for (int64_t i = 0; i < C; ++i) y[i] = x[i] + t[i];

    rms_rows(y, in[5].data<float>(), h, 1, C, sh.eps_post);
    const QArgs gate_up[2] = {args(in, 4, h, g, F, C, sh), args(in, 5, h, u, F, C, sh)};
    project(sh, gate_up, 4, 2);
    silu_mul_rows(g, u, g, F);
    const QArgs down = args(in, 6, g, t, C, F, sh);
    project(sh, &down, 6, 1);
    for (int64_t i = 0; i < C; ++i) y[i] += t[i];
  }

  BlockShape sh_;
  int64_t offset_;
};

void need(bool ok, const std::string& what) {
  if (!ok) throw std::invalid_argument("[decoder_block] " + what);
}

mx::array decoder_block_op(const mx::array& x, const mx::array& keys, const mx::array& values, int offset,
                           const mx::array& inv_freq, const mx::array& norm_in, const mx::array& norm_post,
                           const std::vector<mx::array>& weights, const std::vector<int>& quant, int heads,
                           int dims, float rope_scale, float attn_scale, float eps_in, float eps_post) {
  need(weights.size() == 3 * kProj, "needs (weight, scales, biases) for q, k, v, o, gate, up, down: 21 arrays.");
  need(quant.size() == 2 * kProj, "needs (group_size, bits) for each of the 7 projections: 14 ints.");
  for (const auto* a : {&x, &keys, &values, &inv_freq, &norm_in, &norm_post}) require_f32(*a, "decoder_block", "activations, cache and norms");
  const int64_t C = norm_in.ndim() == 1 ? norm_in.shape(0) : -1;
  need(x.size() == static_cast<size_t>(C) && x.shape().back() == C && norm_post.shape() == norm_in.shape(),
       "takes one token: x (1, 1, C) with norm weights (C,).");
  need(keys.ndim() == 4 && keys.shape(0) == 1 && values.shape() == keys.shape(),
       "needs the KV cache's key and value buffers (1, Hk, capacity, D), as mlx-lm's KVCache holds them.");
  need(offset >= 0 && offset < keys.shape(2), "offset must be inside the cache buffer (grow it first).");
  const int64_t Hk = keys.shape(1), D = keys.shape(3);
  need(heads > 0 && heads % Hk == 0, "query heads must be a multiple of the cache's kv heads.");
  need(dims >= 2 && dims % 2 == 0 && dims <= D && inv_freq.ndim() == 1 && inv_freq.shape(0) == dims / 2,
       "rope needs even dims <= head dim and inv_freq (dims / 2,).");
  BlockShape sh{C, 0, heads, Hk, D, dims, rope_scale, attn_scale, eps_in, eps_post, {}, {}};
  const int64_t F = weights[12].shape(0);  // gate's rows
  sh.F = F;
  const int64_t rows[kProj] = {heads * D, Hk * D, Hk * D, C, F, F, C};
  const int64_t cols[kProj] = {C, C, C, heads * D, C, C, F};
  const char* names[kProj] = {"q", "k", "v", "o", "gate", "up", "down"};
  mx::Stream s = cpu_stream("decoder_block");
  std::vector<mx::array> inputs = {x, keys, values, dense(inv_freq, s), dense(norm_in, s),
                                   dense(norm_post, s)};
  for (int j = 0; j < kProj; ++j) {
    const int gs = quant[2 * j], bits = quant[2 * j + 1];
    const mx::array &w = weights[3 * j], &sc = weights[3 * j + 1], &b = weights[3 * j + 2];
    const std::string at = std::string(names[j]) + "_proj ";
    need(bits == 4 || bits == 8, at + "must be 4- or 8-bit.");
    need(gs == 32 || gs == 64 || gs == 128, at + "group size must be 32, 64 or 128.");
    need(w.dtype() == mx::uint32 && w.ndim() == 2 && w.shape(0) == rows[j] &&
             static_cast<int64_t>(w.shape(1)) * 32 / bits == cols[j],
         at + "weights must be (" + std::to_string(rows[j]) + ", " + std::to_string(cols[j]) + " * bits / 32) uint32.");
    const mx::Shape groups = {static_cast<int>(rows[j]), static_cast<int>(cols[j] / gs)};
    need((sc.dtype() == mx::float32 || sc.dtype() == mx::float16) && b.dtype() == sc.dtype() &&
             sc.shape() == groups && b.shape() == groups && cols[j] % gs == 0,
         at + "scales and biases must be (N, K / group_size), float32 or float16 alike.");
    sh.group[j] = gs;
    sh.bits[j] = bits;
    for (const auto* a : {&w, &sc, &b}) inputs.push_back(dense(*a, s));
  }
  return mx::array(x.shape(), mx::float32, std::make_shared<BlockStep>(s, sh, offset), std::move(inputs));
}

}  // namespace

void register_block(nb::module_& m) {
  m.def("decoder_block", &decoder_block_op, nb::arg("x"), nb::arg("keys"), nb::arg("values"), nb::arg("offset"),
        nb::arg("inv_freq"), nb::arg("norm_in"), nb::arg("norm_post"), nb::arg("weights"), nb::arg("quant"),
        nb::arg("heads"), nb::arg("dims"), nb::arg("rope_scale"), nb::arg("attn_scale"), nb::arg("eps_in"),
        nb::arg("eps_post"),
        "One llama decoder block for one token (CPU stream): x + attn(norm(x)), then + mlp(norm(.)); writes the "
        "token's rope'd key and its value into row `offset` of the cache buffers (1, Hk, capacity, D) in place.");
}
