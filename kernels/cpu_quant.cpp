// MLX's affine 4- and 8-bit quantized matmul (x @ dequantize(w).T, as mx.quantized_matmul with
// transpose=True) and dequantize, as MLX primitives for the CPU, threaded over output rows.
//
// Layout (MLX's, and GGUF Q4_0/Q4_1/Q8_0's once converted): w is (N, K * bits / 32) uint32, element
// k of a row is bits-wide field k % (32 / bits) of word k / (32 / bits), lowest field first; scales
// and biases are (N, K / group), float32 or float16 (GGUF's own, kept exactly), w = scale * q + bias.
// With AVX2 the product is cpu_qmv.cpp's. The portable kernel here unpacks 8 weights into a vector
// register, dequantizes them with one FMA and uses them at once, never stored, four rows of x per
// weight vector. Prefill dequantizes (threaded) for BLAS.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <thread>
#include <unistd.h>

#include <nanobind/nanobind.h>

#include "cpu_common.h"
#include "cpu_quant.h"

namespace nb = nanobind;

namespace {

using namespace lacy;

// ---- a small pool of threads over output rows -------------------------------------------------
// MLX's CPU stream runs each task on one thread; BLAS threads its own calls, nothing else does.
// A decode step makes ~120 of these calls a few microseconds apart, so workers spin on a call
// counter for a while before they sleep on a condition variable: waking a sleeping thread took
// longer than many of the products it was woken for. A call is cut into a few slices per thread
// that whoever is free claims, the caller included: when a worker is off its core (the runtime's
// own Python thread shares the cores), the caller does the slices itself instead of waiting.
class Pool {
 public:
  // Runs fn(lo, hi) over [0, n) in slices of multiples of `align`; blocks until done.
  void run(int64_t n, int64_t align, const std::function<void(int64_t, int64_t)>& fn) {
    const int threads = threads_.load();
    std::unique_lock<std::mutex> busy(run_mu_, std::try_to_lock);
    if (threads <= 1 || n < 2 * align || !busy.owns_lock()) {  // another stream holds the pool
      fn(0, n);
      return;
    }
    ensure_workers(threads);
    const int64_t units = (n + align - 1) / align;
    Job job{&fn, n, align, units, static_cast<int>(std::min<int64_t>(units, threads * kSlicesPerThread))};
    job_.store(&job);
    int sleeping;
    {
      std::lock_guard<std::mutex> lock(mu_);  // with the sleepers' count: no wake-up is lost
      generation_.fetch_add(1, std::memory_order_release);
      sleeping = sleepers_;
    }
    if (sleeping) cv_.notify_all();
    job.work();
    // No worker may touch `job` once this returns: one that has not yet counted itself active
    // will find no job; one that has is waited for (both sides sequentially consistent).
    job_.store(nullptr);
    for (int spin = 0; active_.load() > 0; ++spin) {
      if (spin > 2000) std::this_thread::yield();
    }
  }

  void set_threads(int n) { threads_.store(std::max(1, n)); }
  int threads() const { return threads_.load(); }

 private:
  struct Job {
    const std::function<void(int64_t, int64_t)>* fn;
    int64_t n, align, units;
    int slices;
    std::atomic<int> next{0};
    void work() {  // claims slices until none is left
      for (int s; (s = next.fetch_add(1, std::memory_order_relaxed)) < slices;) {
        (*fn)(std::min(n, units * s / slices * align), std::min(n, units * (s + 1) / slices * align));
      }
    }
  };

  void ensure_workers(int threads) {
    if (owner_ != getpid()) {  // a forked child has no workers: start anew (the old ones are gone)
      workers_.clear();
      owner_ = getpid();
    }
    while (static_cast<int>(workers_.size()) < threads - 1) {
      workers_.emplace_back([this] { work(); });
      workers_.back().detach();
    }
  }

  // The call after `seen`: spun for up to ~kSpinUs, then slept for.
  uint64_t next(uint64_t seen) {
    auto start = std::chrono::steady_clock::now();
    for (int spin = 1;; ++spin) {
      const uint64_t g = generation_.load(std::memory_order_acquire);
      if (g != seen) return g;
      pause();
      if (spin % 256 == 0 && std::chrono::steady_clock::now() - start > std::chrono::microseconds(kSpinUs)) break;
    }
    std::unique_lock<std::mutex> lock(mu_);
    ++sleepers_;
    cv_.wait(lock, [&] { return generation_.load(std::memory_order_acquire) != seen; });
    --sleepers_;
    return generation_.load(std::memory_order_acquire);
  }

  static void pause() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield");
#endif
  }

  void work() {
    uint64_t seen = 0;
    for (;;) {
      seen = next(seen);
      active_.fetch_add(1);
      if (Job* job = job_.load()) job->work();
      active_.fetch_sub(1);
    }
  }

  static constexpr int kSpinUs = 300;       // longer than the gap between two decode steps' products
  static constexpr int kSlicesPerThread = 4;
  std::atomic<int> threads_{1};
  std::mutex run_mu_, mu_;
  std::condition_variable cv_;
  std::vector<std::thread> workers_;
  std::atomic<Job*> job_{nullptr};
  std::atomic<int> active_{0};
  int sleepers_ = 0;  // under mu_
  std::atomic<uint64_t> generation_{0};
  pid_t owner_ = 0;
};

Pool& pool() {
  static Pool* p = new Pool();  // never destroyed: detached workers may still wait on it at exit
  return *p;
}

// ---- the kernels ------------------------------------------------------------------------------
typedef uint64_t q4 __attribute__((vector_size(32)));

template <int BITS>
LACY_INLINE f8 unpack8(const uint32_t* row, int64_t k) {  // elements k..k+7 of a row, as floats
  if constexpr (BITS == 4) {
    const u8 shifts = {0, 4, 8, 12, 16, 20, 24, 28};
    u8 v = u8{} + row[k / 8];
    return __builtin_convertvector((i8)((v >> shifts) & 15u), f8);
  } else {  // two words to four lanes each by one permute (a byte-vector conversion goes scalar in GCC 12)
    const u8 shifts = {0, 8, 16, 24, 0, 8, 16, 24};
    uint64_t pair;
    std::memcpy(&pair, row + k / 4, sizeof(pair));
    const u8 both = (u8)(q4{} + pair);
    const u8 v = __builtin_shufflevector(both, both, 0, 0, 0, 0, 1, 1, 1, 1);
    return __builtin_convertvector((i8)((v >> shifts) & 255u), f8);
  }
}

// Output rows [n0, n1) of MT rows of x (starting at row m0).
template <int BITS, int GS, int MT>
LACY_INLINE void qrows(const QArgs& a, int64_t m0, int64_t n0, int64_t n1) {
  const int64_t wpr = a.K * BITS / 32;
  const float* x = a.x + m0 * a.K;
  for (int64_t n = n0; n < n1; ++n) {
    const uint32_t* wr = a.w + n * wpr;
    thread_local std::vector<float> buf;
    const float *sr, *br;
    row_params(a.s, a.b, a.half, a.G, n, 1, buf, sr, br);
    f8 acc0 = {}, acc1 = {}, acc2 = {}, acc3 = {};
    for (int64_t g = 0; g < a.G; ++g) {
      const float scale = sr[g], bias = br[g];
#pragma GCC unroll 16
      for (int64_t k = g * GS; k < (g + 1) * GS; k += 8) {
        const f8 wv = unpack8<BITS>(wr, k) * scale + bias;
        acc0 += wv * load8(x + k);
        if constexpr (MT > 1) acc1 += wv * load8(x + a.K + k);
        if constexpr (MT > 2) acc2 += wv * load8(x + 2 * a.K + k);
        if constexpr (MT > 3) acc3 += wv * load8(x + 3 * a.K + k);
      }
    }
    float* o = a.out + m0 * a.N + n;
    o[0] = hsum(acc0);
    if constexpr (MT > 1) o[a.N] = hsum(acc1);
    if constexpr (MT > 2) o[2 * a.N] = hsum(acc2);
    if constexpr (MT > 3) o[3 * a.N] = hsum(acc3);
  }
}

template <int BITS, int GS>
LACY_INLINE void qmm_gs(const QArgs& a, int64_t n0, int64_t n1) {
  int64_t m = 0;
  for (; m + 4 <= a.M; m += 4) qrows<BITS, GS, 4>(a, m, n0, n1);
  switch (a.M - m) {
    case 3: qrows<BITS, GS, 3>(a, m, n0, n1); break;
    case 2: qrows<BITS, GS, 2>(a, m, n0, n1); break;
    case 1: qrows<BITS, GS, 1>(a, m, n0, n1); break;
    default: break;
  }
}

LACY_CLONES void qmm_range(const QArgs& a, int bits, int gs, int64_t n0, int64_t n1) {
  if (bits == 4) {
    if (gs == 32) qmm_gs<4, 32>(a, n0, n1);
    else if (gs == 64) qmm_gs<4, 64>(a, n0, n1);
    else qmm_gs<4, 128>(a, n0, n1);
  } else {
    if (gs == 32) qmm_gs<8, 32>(a, n0, n1);
    else if (gs == 64) qmm_gs<8, 64>(a, n0, n1);
    else qmm_gs<8, 128>(a, n0, n1);
  }
}

template <int BITS>
LACY_INLINE void dequant_rows_bits(const uint32_t* w, const void* s, const void* b, bool half, float* out,
                                   int64_t K, int gs, int64_t n0, int64_t n1) {
  const int64_t wpr = K * BITS / 32, G = K / gs;
  std::vector<float> buf;
  for (int64_t n = n0; n < n1; ++n) {
    const float *sr, *br;
    row_params(s, b, half, G, n, 1, buf, sr, br);
    for (int64_t k = 0; k < K; k += 8) {
      store8(out + n * K + k, unpack8<BITS>(w + n * wpr, k) * sr[k / gs] + br[k / gs]);
    }
  }
}

LACY_CLONES void dequant_range(const uint32_t* w, const void* s, const void* b, bool half, float* out, int64_t K,
                               int bits, int gs, int64_t n0, int64_t n1) {
  if (bits == 4) dequant_rows_bits<4>(w, s, b, half, out, K, gs, n0, n1);
  else dequant_rows_bits<8>(w, s, b, half, out, K, gs, n0, n1);
}

// Rows per thread slice: whole cache lines of output for one row of x.
constexpr int64_t kAlign = 16;
// Products smaller than this many weights run on one thread (see quantized_products): in the
// runtime's decode loop, splitting a 576x576 product cost more than it saved (measured at 2^16,
// 2^18, 2^19 and 2^20; 2^19 threads SmolLM2's q/k/v, MLP and head, not its o_proj).
constexpr int64_t kThreadedWeights = 1 << 19;

// ---- the primitives ---------------------------------------------------------------------------
class QuantPrimitive : public mx::UnaryPrimitive {
 public:
  QuantPrimitive(mx::Stream stream, int group_size, int bits)
      : mx::UnaryPrimitive(stream), group_size_(group_size), bits_(bits) {}
  void eval_gpu(const std::vector<mx::array>&, mx::array&) override {
    throw std::runtime_error(std::string("[") + name() + "] runs on the CPU only; GPUs use mx.quantized_matmul.");
  }
  bool is_equivalent(const mx::Primitive& other) const override {
    const auto& o = static_cast<const QuantPrimitive&>(other);
    return group_size_ == o.group_size_ && bits_ == o.bits_;
  }

 protected:
  int group_size_, bits_;
};

class QuantizedMatmulCpu : public QuantPrimitive {
 public:
  using QuantPrimitive::QuantPrimitive;
  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override {
    const mx::array& x = inputs[0];
    const int64_t K = x.shape().back(), N = out.shape().back();
    const int64_t M = K ? static_cast<int64_t>(x.size()) / K : 0;
    out.set_data(mx::allocator::malloc(out.nbytes()));
    dispatch(stream(), inputs, out,
             [x, w = inputs[1], s = inputs[2], b = inputs[3], out = out.data<float>(), M, N, K, gs = group_size_,
              bits = bits_]() {
               quantized_product({x.data<float>(), w.data<uint32_t>(), s.data<void>(), b.data<void>(), out, M, N, K,
                                  K / gs, s.dtype() == mx::float16},
                                 bits, gs);
             });
  }
  // d(x @ W.T)/dx = cotangent @ W, in MLX's own quantized op (the weights are not trained here).
  std::vector<mx::array> vjp(const std::vector<mx::array>& primals, const std::vector<mx::array>& cotangents,
                             const std::vector<int>& argnums, const std::vector<mx::array>&) override {
    std::vector<mx::array> grads;
    for (int i : argnums) {
      if (i != 0) throw std::invalid_argument("[quantized_matmul] has no gradient for its quantized weights.");
      grads.push_back(mx::quantized_matmul(cotangents[0], primals[1], primals[2], primals[3], false, group_size_,
                                           bits_, "affine", stream()));
    }
    return grads;
  }
  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>& inputs) override {
    mx::Shape shape = inputs[0].shape();
    shape.back() = inputs[1].shape(0);
    return {shape};
  }
  const char* name() const override { return "LacyQuantizedMatmul"; }
};

class DequantizeCpu : public QuantPrimitive {
 public:
  using QuantPrimitive::QuantPrimitive;
  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override {
    const int64_t N = out.shape(0), K = out.shape(1);
    out.set_data(mx::allocator::malloc(out.nbytes()));
    dispatch(stream(), inputs, out,
             [w = inputs[0], s = inputs[1], b = inputs[2], out = out.data<float>(), N, K, gs = group_size_,
              bits = bits_]() {
               pool().run(N, kAlign, [&](int64_t lo, int64_t hi) {
                 dequant_range(w.data<uint32_t>(), s.data<void>(), b.data<void>(), s.dtype() == mx::float16, out, K,
                               bits, gs, lo, hi);
               });
             });
  }
  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>& inputs) override {
    return {{inputs[0].shape(0), inputs[0].shape(1) * 32 / bits_}};
  }
  const char* name() const override { return "LacyDequantize"; }
};

// ---- ops --------------------------------------------------------------------------------------
void check_quantized(const mx::array& w, const mx::array& scales, const mx::array& biases, int group_size, int bits,
                     const char* op) {
  const std::string at = std::string("[") + op + "] ";
  if (bits != 4 && bits != 8) throw std::invalid_argument(at + "supports 4- and 8-bit weights only.");
  if (group_size != 32 && group_size != 64 && group_size != 128) {
    throw std::invalid_argument(at + "supports group sizes 32, 64 and 128 only.");
  }
  if (w.dtype() != mx::uint32 || w.ndim() != 2) throw std::invalid_argument(at + "expects (N, K * bits / 32) uint32 weights.");
  if ((scales.dtype() != mx::float32 && scales.dtype() != mx::float16) || biases.dtype() != scales.dtype()) {
    throw std::invalid_argument(at + "expects float32 or float16 scales and biases of one dtype.");
  }
  const int64_t K = static_cast<int64_t>(w.shape(1)) * 32 / bits;
  const mx::Shape groups = {w.shape(0), static_cast<int>(K / group_size)};
  if (K % group_size != 0 || scales.shape() != groups || biases.shape() != groups) {
    throw std::invalid_argument(at + "scales and biases must be (N, K / group_size) for weights (N, K * bits / 32).");
  }
}

mx::array quantized_matmul_op(const mx::array& x, const mx::array& w, const mx::array& scales,
                              const mx::array& biases, int group_size, int bits) {
  check_quantized(w, scales, biases, group_size, bits, "quantized_matmul");
  require_f32(x, "quantized_matmul", "inputs");
  const int64_t K = static_cast<int64_t>(w.shape(1)) * 32 / bits;
  if (x.ndim() < 1 || x.shape().back() != K) {
    throw std::invalid_argument("[quantized_matmul] x's last axis must be the weights' K = "
                                + std::to_string(K) + ".");
  }
  mx::Stream s = cpu_stream("quantized_matmul");
  mx::Shape shape = x.shape();
  shape.back() = w.shape(0);
  return mx::array(shape, mx::float32, std::make_shared<QuantizedMatmulCpu>(s, group_size, bits),
                   {dense(x, s), dense(w, s), dense(scales, s),
                    dense(biases, s)});
}

mx::array dequantize_op(const mx::array& w, const mx::array& scales, const mx::array& biases, int group_size,
                        int bits) {
  check_quantized(w, scales, biases, group_size, bits, "dequantize");
  mx::Stream s = cpu_stream("dequantize");
  const mx::Shape shape = {w.shape(0), w.shape(1) * 32 / bits};
  return mx::array(shape, mx::float32, std::make_shared<DequantizeCpu>(s, group_size, bits),
                   {dense(w, s), dense(scales, s), dense(biases, s)});
}

}  // namespace

void lacy::quantized_products(const QArgs* mats, int count, int bits, int gs) {
  int64_t weights = 0;
  for (int i = 0; i < count; ++i) weights += mats[i].N * mats[i].K * std::max<int64_t>(mats[i].M, 1);
  // One thread below kThreadedWeights: a hand-off between threads costs more than it saves there.
  const int64_t align = weights >= kThreadedWeights ? kAlign : std::numeric_limits<int64_t>::max() / 4;
  if (qmv_run(mats, count, bits, gs, align)) return;
  for (int i = 0; i < count; ++i) {  // no AVX2: the portable kernel
    const QArgs& a = mats[i];
    pool().run(a.N, std::min(align, a.N), [&](int64_t lo, int64_t hi) { qmm_range(a, bits, gs, lo, hi); });
  }
}

void lacy::quantized_product(const QArgs& a, int bits, int gs) { quantized_products(&a, 1, bits, gs); }

void lacy::parallel_rows(int64_t n, int64_t align, const std::function<void(int64_t, int64_t)>& fn) {
  pool().run(n, align, fn);
}

void register_quant(nb::module_& m) {
  m.def("quantized_matmul", &quantized_matmul_op, nb::arg("x"), nb::arg("w"), nb::arg("scales"), nb::arg("biases"),
        nb::arg("group_size"), nb::arg("bits"),
        "x @ dequantize(w).T for MLX's affine 4/8-bit weights, float32 or float16 scales and biases (CPU stream).");
  m.def("dequantize", &dequantize_op, nb::arg("w"), nb::arg("scales"), nb::arg("biases"), nb::arg("group_size"),
        nb::arg("bits"), "MLX's affine 4/8-bit weights as a float32 (N, K) matrix (CPU stream).");
  m.def("set_threads", [](int n) { pool().set_threads(n); }, nb::arg("n"),
        "Threads the quantized kernels split their output rows over (default 1).");
  m.def("threads", [] { return pool().threads(); }, "Threads the quantized kernels use.");
  m.def("simd_level", [](int force) { return lacy::qmv_level(force); }, nb::arg("force") = -1,
        "The product's SIMD path: 2 AVX-512, 1 AVX2, 0 portable; force >= 0 caps it (for tests).");
}
