// How the persistent kernels fill shared memory: their slice of the weights once per launch, and
// each step's rows (h_{t-1} or gate gradients written by other blocks) by TMA bulk copies or
// cp.async, with the waits block_gemm needs before it reads a tile.
#pragma once

#include "persistent_layout.cuh"

namespace packedrnn {
namespace persistent {

// How a kernel stages: cp.async by every thread, or (Plan::bulk) one bulk copy per row, issued by
// warp 0 and counted on the mbarrier `bar`, whose phase parity flips with every staging, alike in
// every thread. Built before the kernel's first __syncthreads.
struct Stage {
  bool bulk;
  unsigned long long* bar;
  unsigned parity = 0;
  __device__ Stage(bool b, unsigned long long* m) : bulk(b), bar(m) {
    if (bulk && threadIdx.x == 0) bulk_init(bar);
  }
};

// Stage np rows of K values into Xs (row stride ld); row r starts at src_row(r) in global memory,
// written by other blocks before the last grid barrier (so read through L2). With `vec` (every row
// 16-byte aligned) in 16-byte cp.async pieces, one commit group per tile of kTile rows (the last
// group also takes the tiles past kGroups), so that block_gemm starts on the first tile while the
// others are in flight: it waits for each tile's group (tile_ready); or, with st.bulk, as whole
// rows through the TMA engine, all landed before it returns. Returns the number of groups (0:
// nothing in flight). The caller __syncthreads before block_gemm.
template <typename S, typename F>
__device__ __forceinline__ int stage_rows(Stage& st, const Gemm& gm, S* Xs, int np, bool vec, F src_row) {
  if (vec && st.bulk) {
    const unsigned row = gm.K * (unsigned)sizeof(S);
    if (threadIdx.x < 32) {  // lane 0 announces the bytes before any copy can complete
      if (threadIdx.x == 0) bulk_expect(st.bar, np * row);
      __syncwarp();
      for (int r = threadIdx.x; r < np; r += 32) bulk_copy(Xs + r * gm.ld, src_row(r), row, st.bar);
    }
    while (!bulk_done(st.bar, st.parity)) {
    }
    st.parity ^= 1;
    return 0;
  }
  if (!vec) {
    for (int e = threadIdx.x; e < np * gm.K; e += kThreads) {
      const int r = e / gm.K, c = e % gm.K;
      Xs[r * gm.ld + c] = __ldcg(src_row(r) + c);
    }
    return 0;
  }
  const int per = gm.K * (int)sizeof(S) / 16;  // pieces per row
  const int groups = min((np + kTile - 1) / kTile, kGroups);
  for (int g = 0; g < groups; ++g) {
    const int end = (g == groups - 1 ? np : (g + 1) * kTile) * per;
#pragma unroll 4
    for (int e = g * kTile * per + threadIdx.x; e < end; e += kThreads) {
      const int r = e / per, c = e % per;
      copy16_async(reinterpret_cast<unsigned char*>(Xs + r * gm.ld) + c * 16,
                   reinterpret_cast<const unsigned char*>(src_row(r)) + c * 16);
    }
    commit_copies();
  }
  return groups;
}

// Before block_gemm reads tile t of Xs: each thread waits for its copies of tiles <= t, then a
// barrier makes every thread's visible. Every thread of the block calls it.
__device__ __forceinline__ void tile_ready(int groups, int t) {
  if (groups == 0) return;
  wait_copies(groups - 1 - min(t, groups - 1));
  __syncthreads();
}

// Zero the padding columns [K, ld) of the first n rows of Xs, which block_gemm reads against the
// zeros of Ws: a stale NaN there would spread to other rows. Staging never writes them, so one call
// per launch suffices unless the launch stages rows of two widths (a projection).
template <typename S>
__device__ void zero_padding(const Gemm& gm, int n, S* Xs) {
  const int pad = gm.ld - gm.K;
  for (int i = threadIdx.x; i < n * pad; i += kThreads) {
    put(Xs + (size_t)(i / pad) * gm.ld + gm.K + i % pad, 0.f);
  }
}

// Fill Ws [JT][ld] with *at(j, k), or zero where at returns null (padding included).
template <typename S, typename F>
__device__ void fill_weights(const Gemm& gm, S* Ws, F at) {
  for (int i = threadIdx.x; i < gm.JT * gm.ld; i += kThreads) {
    const S* v = at(i / gm.ld, i % gm.ld);
    if (v != nullptr) {
      Ws[i] = *v;
    } else {
      put(Ws + i, 0.f);
    }
  }
}

// The gate rows of the block's units, as the forward multiplies them: row j = g*Hb + uu of Ws
// holds W_hh[g*H + u0 + uu][0..P) of direction d (zero past the NG gates and past unit H).
template <typename S, int NG, typename Params>
__device__ void fill_gate_rows(const Gemm& gm, S* Ws, const Params& p, int64_t d, int Hb, int64_t u0) {
  const S* w = static_cast<const S*>(p.w_hh) + d * NG * p.H * p.P;
  fill_weights(gm, Ws, [&](int j, int k) {
    const int g = j / Hb;
    const int64_t u = u0 + j % Hb;
    return g < NG && u < p.H && k < p.P ? w + (g * p.H + u) * p.P + k : nullptr;
  });
}

}  // namespace persistent
}  // namespace packedrnn
