// Fused entropy gate for mx.fast.metal_kernel: one pass over each logits row gives entropy,
// p(<CALL>), top-1 probability, the greedy token and the gate decision (lacy_mlx/gate.py).
// Two kernel bodies share the header below:
//
// kernel: gate_partial
// inputs: logits meta
// outputs: partials
// template: T NT
//
// kernel: gate_final
// inputs: logits params meta partials
// outputs: entropy p_call p_top token decision
// template: T NT
//
// meta is int32 [V, SPLIT, CHUNK, call_id]: sizes travel as data so one compiled kernel per dtype
// serves every vocabulary and batch size.
// With SPLIT == 1 (many rows) gate_final alone scans each row with one threadgroup. With
// SPLIT > 1 (few rows, decode) gate_partial spreads each row over SPLIT threadgroups that write
// (max, sum exp, sum z*exp, argmax) partials, and gate_final merges them: Metal gives no portable
// device-scope fence between threadgroups of one dispatch, so the combine is a second dispatch.

// @@header
struct GateAcc {
  float m;  // running max (cleaned logits); -inf while nothing usable was seen
  float s;  // sum of exp(x - m)
  float u;  // sum of exp(x - m) * (x - m)
  int idx;  // lowest index holding m; INT_MAX while empty
};

inline float gate_neg_inf() {
  return as_type<float>(0xff800000u);
}

inline GateAcc gate_empty() {
  GateAcc a;
  a.m = gate_neg_inf();
  a.s = 0.0f;
  a.u = 0.0f;
  a.idx = 0x7fffffff;
  return a;
}

// NaN -> -inf (masked); +inf -> largest float32 so +inf entries share the mass.
inline float gate_clean(float x) {
  return x == x ? metal::min(x, 3.402823466e+38f) : gate_neg_inf();
}

// Rescale (s, u) from max m to a max nm >= m; 0 * -inf never reaches the sums.
inline void gate_rescale(float m, float nm, thread float& s, thread float& u) {
  float d = m - nm;
  float f = (s > 0.0f) ? metal::exp(d) : 0.0f;
  if (f > 0.0f) {
    u = f * (u + d * s);
    s = f * s;
  } else {
    s = 0.0f;
    u = 0.0f;
  }
}

inline GateAcc gate_merge(GateAcc a, GateAcc b) {
  GateAcc r;
  r.m = metal::max(a.m, b.m);
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

inline void gate_fold_one(thread GateAcc& a, float c, int i) {
  if (c > a.m) {  // strict: earlier indices win ties
    gate_rescale(a.m, c, a.s, a.u);
    a.m = c;
    a.idx = i;
  }
  if (a.m != gate_neg_inf()) {
    float z = c - a.m;
    float e = metal::exp(z);
    a.s += e;
    a.u += (e > 0.0f) ? e * z : 0.0f;
  }
}

// One thread's share of row[c0, c1): coalesced, 4 loads in flight per step.
template <typename T, int NT>
inline GateAcc gate_scan(const device T* row, int c0, int c1, uint t) {
  GateAcc a = gate_empty();
  for (int base = c0 + int(t); base < c1; base += 4 * NT) {
    float c[4];
    for (int g = 0; g < 4; ++g) {
      int i = base + g * NT;
      c[g] = (i < c1) ? gate_clean(static_cast<float>(row[i])) : gate_neg_inf();
    }
    for (int g = 0; g < 4; ++g) {
      gate_fold_one(a, c[g], base + g * NT);
    }
  }
  return a;
}

inline GateAcc gate_simd_reduce(GateAcc a) {
  for (ushort off = 16; off > 0; off >>= 1) {
    GateAcc b;
    b.m = metal::simd_shuffle_xor(a.m, off);
    b.s = metal::simd_shuffle_xor(a.s, off);
    b.u = metal::simd_shuffle_xor(a.u, off);
    b.idx = metal::simd_shuffle_xor(a.idx, off);
    a = gate_merge(a, b);
  }
  return a;
}

// Threadgroup-wide merge (32-wide SIMD groups); the result is valid in thread 0.
template <int NT>
inline GateAcc gate_group_reduce(GateAcc a, threadgroup GateAcc* shared, uint t) {
  a = gate_simd_reduce(a);
  uint lane = t & 31u;
  uint group = t >> 5;
  if (lane == 0) {
    shared[group] = a;
  }
  threadgroup_barrier(mem_flags::mem_threadgroup);
  if (group == 0) {
    a = (lane < uint(NT / 32)) ? shared[lane] : gate_empty();
    a = gate_simd_reduce(a);
  }
  return a;
}

// @@gate_partial
  threadgroup GateAcc shared[NT / 32];
  int V = meta[0];
  int SPLIT = meta[1];
  int CHUNK = meta[2];
  uint t = thread_position_in_threadgroup.x;
  int block = int(threadgroup_position_in_grid.x);
  int row = block / SPLIT;
  int part = block - row * SPLIT;
  int c0 = part * CHUNK;
  int c1 = metal::min(c0 + CHUNK, V);
  GateAcc acc = gate_scan<T, NT>(logits + size_t(row) * V, c0, c1, t);
  acc = gate_group_reduce<NT>(acc, shared, t);
  if (t == 0) {
    device float* p = partials + size_t(block) * 4;
    p[0] = acc.m;
    p[1] = acc.s;
    p[2] = acc.u;
    p[3] = as_type<float>(acc.idx);
  }

// @@gate_final
  threadgroup GateAcc shared[NT / 32];
  int V = meta[0];
  int SPLIT = meta[1];
  uint t = thread_position_in_threadgroup.x;
  int row = int(threadgroup_position_in_grid.x);
  const device T* x = logits + size_t(row) * V;
  GateAcc acc = gate_empty();
  if (SPLIT == 1) {
    acc = gate_scan<T, NT>(x, 0, V, t);
  } else {
    const device float* parts = partials + size_t(row) * SPLIT * 4;
    for (int j = int(t); j < SPLIT; j += NT) {
      GateAcc b;
      b.m = parts[j * 4 + 0];
      b.s = parts[j * 4 + 1];
      b.u = parts[j * 4 + 2];
      b.idx = as_type<int>(parts[j * 4 + 3]);
      acc = gate_merge(acc, b);
    }
  }
  acc = gate_group_reduce<NT>(acc, shared, t);
  if (t == 0) {
    float h = 0.0f, pc = 0.0f, pt = 0.0f;
    int tok = 0;
    bool dec = false;
    if (acc.m != gate_neg_inf()) {
      float inv = 1.0f / acc.s;
      h = metal::max(metal::log(acc.s) - acc.u * inv, 0.0f);
      pt = inv;
      tok = acc.idx;
      int cid = meta[3];
      if (cid >= 0 && cid < V) {
        pc = metal::exp(gate_clean(static_cast<float>(x[cid])) - acc.m) * inv;
      }
      int mode = int(params[0]);
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
