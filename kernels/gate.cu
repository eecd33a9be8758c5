// Fused entropy gate for mx.fast.cuda_kernel: one pass over each logits row gives entropy,
// p(<CALL>), top-1 probability, the greedy token and the gate decision (lacy_mlx/gate.py).
//
// kernel: gate
// inputs: logits params meta workspace
// outputs: entropy p_call p_top token decision
// template: T NT
//
// meta is int32 [V, SPLIT, CHUNK, call_id]: sizes travel as data so one compiled kernel per dtype
// serves every vocabulary and batch size. Each row is split into SPLIT chunks of CHUNK elements, one block of NT threads per chunk, so a
// single row (decode) is read by many SMs. Blocks publish partial (max, sum exp, sum z*exp,
// argmax) to `workspace` and the last block of a row to arrive (atomic counter) combines them,
// writes the outputs and resets the counter: one launch per call. The dispatcher rotates
// workspaces so kernels that may run concurrently in one CUDA graph never share a counter.
// Workspace layout (float32): B*SPLIT partials of 4 words, then B uint32 counters.

// @@header
struct GateAcc {
  float m;  // running max (cleaned logits); -inf while nothing usable was seen
  float s;  // sum of exp(x - m)
  float u;  // sum of exp(x - m) * (x - m)
  int idx;  // lowest index holding m; INT_MAX while empty
};

__device__ __forceinline__ float gate_neg_inf() {
  return __int_as_float(0xff800000);
}

// NaN -> -inf (masked); +inf -> largest float32 so +inf entries share the mass.
__device__ __forceinline__ float gate_clean(float x) {
  return x == x ? fminf(x, 3.402823466e+38f) : gate_neg_inf();
}

// Rescale (s, u) from max m to a max nm >= m; 0 * -inf never reaches the sums.
__device__ __forceinline__ void gate_rescale(float m, float nm, float& s, float& u) {
  float d = m - nm;
  float f = (s > 0.0f) ? __expf(d) : 0.0f;
  if (f > 0.0f) {
    u = f * (u + d * s);
    s = f * s;
  } else {
    s = 0.0f;
    u = 0.0f;
  }
}

__device__ __forceinline__ GateAcc gate_merge(GateAcc a, GateAcc b) {
  GateAcc r;
  r.m = fmaxf(a.m, b.m);
  r.idx = (a.m > b.m || (a.m == b.m && a.idx < b.idx)) ? a.idx : b.idx;
  if (r.m == gate_neg_inf()) {
    r.s = 0.0f;
    r.u = 0.0f;
    return r;
  }
  gate_rescale(a.m, r.m, a.s, a.u);
  gate_rescale(b.m, r.m, b.s, b.u);
  r.s = a.s + b.s;
  r.u = a.u + b.u;
  return r;
}

// Fold VEC consecutive cleaned values starting at index i0 into the accumulator.
template <int VEC>
__device__ __forceinline__ void gate_fold(GateAcc& a, const float* c, int i0) {
  float gm = c[0];
  int gi = 0;
#pragma unroll
  for (int k = 1; k < VEC; ++k) {
    if (c[k] > gm) {
      gm = c[k];
      gi = k;
    }
  }
  if (gm > a.m) {  // strict: earlier indices win ties
    gate_rescale(a.m, gm, a.s, a.u);
    a.m = gm;
    a.idx = i0 + gi;
  }
  if (a.m == gate_neg_inf()) {
    return;
  }
#pragma unroll
  for (int k = 0; k < VEC; ++k) {
    float z = c[k] - a.m;
    float e = __expf(z);
    a.s += e;
    a.u += (e > 0.0f) ? e * z : 0.0f;
  }
}

__device__ __forceinline__ GateAcc gate_warp_reduce(GateAcc a) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
    GateAcc b;
    b.m = __shfl_xor_sync(0xffffffff, a.m, off);
    b.s = __shfl_xor_sync(0xffffffff, a.s, off);
    b.u = __shfl_xor_sync(0xffffffff, a.u, off);
    b.idx = __shfl_xor_sync(0xffffffff, a.idx, off);
    a = gate_merge(a, b);
  }
  return a;
}

// Block-wide merge; the result is valid in thread 0.
template <int NT>
__device__ __forceinline__ GateAcc gate_block_reduce(GateAcc a, GateAcc* shared) {
  a = gate_warp_reduce(a);
  int lane = threadIdx.x & 31;
  int warp = threadIdx.x >> 5;
  if (lane == 0) {
    shared[warp] = a;
  }
  __syncthreads();
  if (warp == 0) {
    GateAcc empty = {gate_neg_inf(), 0.0f, 0.0f, 0x7fffffff};
    a = (lane < NT / 32) ? shared[lane] : empty;
    a = gate_warp_reduce(a);
  }
  return a;
}

// @@gate
  constexpr int VEC = 16 / sizeof(T);  // one 16-byte load per group
  constexpr int UNROLL = 4;  // groups in flight per thread
  const int V = __ldg(meta + 0);
  const int SPLIT = __ldg(meta + 1);
  const int CHUNK = __ldg(meta + 2);
  const int row = blockIdx.x / SPLIT;
  const int part = blockIdx.x - row * SPLIT;
  const int t = threadIdx.x;
  const T* x = logits + (size_t)row * V;
  const int c0 = part * CHUNK;
  const int c1 = (c0 + CHUNK < V) ? c0 + CHUNK : V;
  const bool aligned = ((reinterpret_cast<size_t>(x + c0) & 15) == 0);

  __shared__ GateAcc shared[NT / 32];
  __shared__ bool last_block;

  GateAcc acc = {gate_neg_inf(), 0.0f, 0.0f, 0x7fffffff};
  for (int base = c0 + t * VEC; base < c1; base += NT * VEC * UNROLL) {
    float c[UNROLL][VEC];
#pragma unroll
    for (int g = 0; g < UNROLL; ++g) {
      int i = base + g * NT * VEC;
      if (aligned && i + VEC <= c1) {
        uint4 raw = __ldg(reinterpret_cast<const uint4*>(x + i));
        const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
        for (int k = 0; k < VEC; ++k) {
          c[g][k] = gate_clean(static_cast<float>(e[k]));
        }
      } else {
#pragma unroll
        for (int k = 0; k < VEC; ++k) {
          c[g][k] = (i + k < c1) ? gate_clean(static_cast<float>(x[i + k])) : gate_neg_inf();
        }
      }
    }
#pragma unroll
    for (int g = 0; g < UNROLL; ++g) {
      gate_fold<VEC>(acc, c[g], base + g * NT * VEC);
    }
  }
  acc = gate_block_reduce<NT>(acc, shared);

  if (SPLIT > 1) {
    float* ws = const_cast<float*>(workspace);
    unsigned int* counters = reinterpret_cast<unsigned int*>(ws + (size_t)gridDim.x * 4);
    if (t == 0) {
      float* p = ws + (size_t)blockIdx.x * 4;
      p[0] = acc.m;
      p[1] = acc.s;
      p[2] = acc.u;
      p[3] = __int_as_float(acc.idx);
      __threadfence();  // publish the partial before taking a ticket
      last_block = (atomicAdd(counters + row, 1u) == (unsigned int)(SPLIT - 1));
    }
    __syncthreads();
    if (!last_block) {
      return;
    }
    __threadfence();
    acc = GateAcc{gate_neg_inf(), 0.0f, 0.0f, 0x7fffffff};
    const float* parts = ws + (size_t)row * SPLIT * 4;
    for (int j = t; j < SPLIT; j += NT) {
      GateAcc b;
      b.m = __ldcg(parts + j * 4 + 0);  // L2: other SMs wrote these
      b.s = __ldcg(parts + j * 4 + 1);
      b.u = __ldcg(parts + j * 4 + 2);
      b.idx = __float_as_int(__ldcg(parts + j * 4 + 3));
      acc = gate_merge(acc, b);
    }
    __syncthreads();  // `shared` is reused
    acc = gate_block_reduce<NT>(acc, shared);
    if (t == 0) {
      counters[row] = 0u;  // ready for the next call that gets this workspace
    }
  }

  if (t == 0) {
    float h = 0.0f, pc = 0.0f, pt = 0.0f;
    int tok = 0;
    bool dec = false;
    if (acc.m != gate_neg_inf()) {
      float inv = 1.0f / acc.s;
      h = fmaxf(logf(acc.s) - acc.u * inv, 0.0f);
      pt = inv;
      tok = acc.idx;
      int cid = __ldg(meta + 3);
      if (cid >= 0 && cid < V) {
        pc = expf(gate_clean(static_cast<float>(x[cid])) - acc.m) * inv;
      }
      int mode = static_cast<int>(params[0]);
      bool by_call = (mode == 1 || mode == 3) && pc >= params[2];
      bool by_entropy = (mode == 2 || mode == 3) && h >= params[1];
      dec = by_call || by_entropy;
    }
    entropy[row] = h;
    p_call[row] = pc;
    p_top[row] = pt;
    token[row] = tok;
    decision[row] = dec;
  }
