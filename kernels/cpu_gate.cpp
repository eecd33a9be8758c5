// The gate's statistics of next-token logits on the CPU, as one MLX primitive: per row the entropy,
// p(<CALL>), the top-1 probability, the greedy token and the decision (lacy_mlx/gate.py holds the
// contract and the plain-MLX reference this is checked against; gate.metal and gate.cu are the GPU
// twins). The reference is ~15 MLX ops over the 49,152 logits of SmolLM2, each a task and a pass:
// ~0.9 ms a decode step on this CPU, a tenth of the step. Here: two passes over a row held in L2.
#include <cmath>
#include <memory>
#include <vector>

#include <nanobind/nanobind.h>
#include <nanobind/stl/vector.h>

#include "cpu_common.h"
#include "cpu_exp.h"

namespace nb = nanobind;

namespace {

using namespace lacy;

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kF32Max = 3.4028234663852886e38f;

// NaN -> -inf, +inf -> the largest finite float (the contract's sanitising).
LACY_INLINE float clean(float v) { return v != v ? -INFINITY : (v > kF32Max ? kF32Max : v); }
LACY_INLINE f8 clean8(f8 v) {
  const f8 ninf = f8{} - INFINITY, top = f8{} + kF32Max;
  v = v != v ? ninf : v;
  return v > top ? top : v;
}

struct GateRow {
  float entropy, p_call, p_top;
  int32_t token;
  bool decision;
};

LACY_CLONES GateRow gate_row(const float* x, int64_t V, int64_t call_id, const float* params) {
  // pass 1: the maximum, then its first index (ties go to the lowest, as mx.argmax)
  f8 mv = f8{} - INFINITY;
  int64_t i = 0;
  for (; i + 8 <= V; i += 8) {
    const f8 v = clean8(load8(x + i));
    mv = v > mv ? v : mv;
  }
  float m = -INFINITY;
  for (int j = 0; j < 8; ++j) m = mv[j] > m ? mv[j] : m;
  for (; i < V; ++i) m = clean(x[i]) > m ? clean(x[i]) : m;
  GateRow r{0.0f, 0.0f, 0.0f, 0, false};
  for (int64_t k = 0; k < V; ++k) {
    if (clean(x[k]) == m) {
      r.token = static_cast<int32_t>(k);
      break;
    }
  }
  if (!(m > -INFINITY)) return r;  // nothing usable: entropy, probabilities 0, never fires
  // pass 2: s = sum e^z and sum e^z z over z = x - m <= 0. Masked entries (z = -inf) and those
  // below 2^-126 count 0: the exp here clamps there, and 2^-126 * z from a clamped +inf is not small.
  f8 sv = {}, ezv = {};
  for (i = 0; i + 8 <= V; i += 8) {
    const f8 v = clean8(load8(x + i));
    const f8 z = v - m, t = z * kLog2e;
    const f8 e = t >= -126.0f ? exp2_nonpos<f8, i8>(t) : f8{};  // masked and underflowing entries: 0
    sv += e;
    ezv += t >= -126.0f ? e * z : f8{};
  }
  float s = hsum(sv), ez = hsum(ezv);
  for (; i < V; ++i) {
    const float z = clean(x[i]) - m, t = z * kLog2e;
    if (t >= -126.0f) {
      const float e = exp2_nonpos<float, int32_t>(t);
      s += e;
      ez += e * z;
    }
  }
  r.entropy = std::max(std::log(s) - ez / s, 0.0f);  // rounding can dip a hair below 0 on one-hot rows
  r.p_top = 1.0f / s;
  if (call_id >= 0 && call_id < V) {
    const float t = (clean(x[call_id]) - m) * kLog2e;
    r.p_call = t >= -126.0f ? exp2_nonpos<float, int32_t>(t) / s : 0.0f;
  }
  const int mode = static_cast<int>(params[0]);
  r.decision = ((mode == 1 || mode == 3) && r.p_call >= params[2]) || ((mode == 2 || mode == 3) && r.entropy >= params[1]);
  return r;
}

class GateCpu : public mx::Primitive {
 public:
  GateCpu(mx::Stream s, int call_id) : mx::Primitive(s), call_id_(call_id) {}

  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override {
    for (auto& o : outputs) o.set_data(mx::allocator::malloc(o.nbytes()));
    auto& encoder = mx::cpu::get_command_encoder(stream());
    for (const auto& in : inputs) encoder.set_input_array(in);
    for (auto& o : outputs) encoder.set_output_array(o);
    const mx::array& x = inputs[0];
    const int64_t V = x.shape().back(), B = V ? static_cast<int64_t>(x.size()) / V : 0;
    encoder.dispatch([x, p = inputs[1], e = outputs[0].data<float>(), pc = outputs[1].data<float>(),
                      pt = outputs[2].data<float>(), tok = outputs[3].data<int32_t>(), dec = outputs[4].data<bool>(), B, V,
                      call_id = call_id_]() {
      for (int64_t b = 0; b < B; ++b) {
        const GateRow r = gate_row(x.data<float>() + b * V, V, call_id, p.data<float>());
        e[b] = r.entropy, pc[b] = r.p_call, pt[b] = r.p_top, tok[b] = r.token, dec[b] = r.decision;
      }
    });
  }
  void eval_gpu(const std::vector<mx::array>&, std::vector<mx::array>&) override {
    throw std::runtime_error("[gate_stats] runs on the CPU only; GPUs use gate.metal / gate.cu.");
  }
  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>& inputs) override {
    const mx::array& x = inputs[0];
    const int rows = x.ndim() == 1 ? 1 : x.shape(0);
    return std::vector<mx::Shape>(5, mx::Shape{rows});
  }
  const char* name() const override { return "LacyGate"; }
  bool is_equivalent(const mx::Primitive& o) const override { return call_id_ == static_cast<const GateCpu&>(o).call_id_; }

 private:
  int call_id_;
};

std::vector<mx::array> gate_stats_op(const mx::array& logits, int call_id, const mx::array& params) {
  require_f32(logits, "gate_stats", "logits");
  require_f32(params, "gate_stats", "params");
  if (logits.ndim() < 1 || logits.ndim() > 2 || logits.shape().back() < 1 || (logits.ndim() == 2 && logits.shape(0) < 1)) {
    throw std::invalid_argument("[gate_stats] takes logits (V,) or (B, V) with V >= 1.");
  }
  if (params.ndim() != 1 || params.shape(0) != 3) {
    throw std::invalid_argument("[gate_stats] params must be [mode, entropy_threshold, call_threshold] (lacy_mlx.gate.gate_params).");
  }
  mx::Stream s = cpu_stream("gate_stats");
  const int rows = logits.ndim() == 1 ? 1 : logits.shape(0);
  return mx::array::make_arrays(std::vector<mx::Shape>(5, mx::Shape{rows}),
                                {mx::float32, mx::float32, mx::float32, mx::int32, mx::bool_},
                                std::make_shared<GateCpu>(s, call_id), {dense(logits, s), dense(params, s)});
}

}  // namespace

void register_gate(nb::module_& m) {
  m.def("gate_stats", &gate_stats_op, nb::arg("logits"), nb::arg("call_id"), nb::arg("params"),
        "[entropy, p_call, p_top, token, decision] of float32 logits (V,) or (B, V), each (B,), as "
        "lacy_mlx.gate.gate_stats_reference (CPU stream).");
}
