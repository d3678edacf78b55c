// The persistent kernels' shared sizes and layout (persistent.cuh has the design): block and tile
// constants, a launch's Plan and its shared-memory carve-up, which units a block owns, the rows
// sorted longest first, the (row, unit) pairs of a chunk, and the phase clock of a profiling build.
#pragma once

#include <cooperative_groups.h>
#include <cuda_runtime.h>

#include <cstdio>

#include "cells.h"
#include "dtypes.cuh"
#include "hardware.cuh"  // or, under PACKEDRNN_EMULATE, the CPU emulator's
#include "rnn_cuda.h"

namespace packedrnn {
namespace persistent {

namespace cg = cooperative_groups;

constexpr int kWarps = 8, kThreads = 32 * kWarps;
constexpr int kTile = 16;      // rows of Xs per pass of block_gemm (the m of mma.m16n8k16)
constexpr int kItems = 2;      // (row, unit) pairs per thread and chunk: NC * Hb <= kItems * kThreads
constexpr int kGroups = 8;     // cp.async groups of a staging (wait_group takes 0..7 pending)
constexpr int kMaxUnits = 16;  // units per block (16: half types only in the forward, see forward_dispatch)

// One product of a step, Y = Ws X^T (block_gemm).
struct Gemm {
  int JT = 0;         // rows of Ws (power of two; 0: no such product)
  int K = 0, Kp = 0;  // reduction length, and padded with zeros (gemm_for)
  int ld = 0;         // row stride of Ws and of the rows of Xs staged for it: Kp + 16 bytes, so
                      // that the 8 rows a fragment load touches fall in distinct shared-memory banks
};

// Sizes of one launch, fixed on the host (plan_for) and passed by value.
struct Plan {
  int Hb = 0, blocks = 0;  // units per block (0: the call does not fit), blocks in the grid
  Gemm rec;                // the recurrent product: JT >= NG*Hb forward, >= Hb backward
  Gemm proj;               // the projection's (forward K = H, backward K = P; JT >= Hb)
  int NC = 0;              // rows per chunk
  size_t smem = 0;         // dynamic shared memory
  bool barrier = false;    // forward: exchange h through `out` and a grid barrier, not tagged words
  bool staged = true;      // Xs exists (the backward's reduce form stages nothing)
  bool bulk = false;       // staging by bulk copies (sm_90 and later)
};

// Per-phase time of block 0, thread 0 (the block's other threads meet it at every __syncthreads,
// so its clock is the block's), printed at the end of each launch. Phases: stage (cp.async copies
// issued, or tagged words received), product (block_gemm, including the wait for tiles still in
// flight), cell, barrier. Compiled in only with -DPACKEDRNN_TIMING (a build for profiling:
// NVCC_APPEND_FLAGS=-DPACKEDRNN_TIMING at install), so that the kernels users run carry no clock.
#ifdef PACKEDRNN_TIMING
constexpr bool kTiming = true;
#else
constexpr bool kTiming = false;
#endif
struct PhaseClock {
  bool on;
  unsigned long long last = 0, total[4] = {0, 0, 0, 0};
  __device__ PhaseClock() : on(kTiming && blockIdx.x == 0 && threadIdx.x == 0) {
    if (on) last = now_ns();
  }
  __device__ void mark(int phase) {
    if (!on) return;
    const unsigned long long t = now_ns();
    total[phase] += t - last;
    last = t;
  }
  __device__ void report(const char* what, long long steps) const {
    if (!on || steps <= 0) return;
    printf("packedrnn timing %s: %lld steps, us/step: stage %.2f, product %.2f, cell %.2f, barrier %.2f\n",
           what, steps, total[0] * 1e-3 / steps, total[1] * 1e-3 / steps, total[2] * 1e-3 / steps,
           total[3] * 1e-3 / steps);
  }
};

// Shared-memory carve-up, in the order of the fields (all offsets multiples of 16 bytes).
// JT, ld: the larger of the two products'.
template <typename S>
struct Smem {
  S* Ws;       // [rec.JT][rec.ld]
  S* Wr;       // [proj.JT][proj.ld]  (projection only)
  S* Xs;       // [NC][ld]
  float* Y;    // [JT][NC]
  float* red;  // [kWarps][max(JT, 8) * kTile]  partial products of block_gemm
  int* order;  // [B] row index by rank (longest first)
  int* lens;   // [B] its length
  int* tmp;    // [B]
  unsigned long long* bar;  // the mbarrier of bulk staging (Stage)
  __host__ __device__ static size_t sizes(const Plan& q, int64_t B, size_t (&n)[6]) {
    auto up = [](size_t v) { return (v + 15) / 16 * 16; };
    const size_t JT = q.rec.JT > q.proj.JT ? q.rec.JT : q.proj.JT;
    const size_t ld = q.rec.ld > q.proj.ld ? q.rec.ld : q.proj.ld;
    n[0] = up((size_t)q.rec.JT * q.rec.ld * sizeof(S));
    n[1] = up((size_t)q.proj.JT * q.proj.ld * sizeof(S));
    n[2] = q.staged ? up((size_t)q.NC * ld * sizeof(S)) : 0;
    n[3] = up(JT * q.NC * 4);
    n[4] = (size_t)kWarps * (JT > 8 ? JT : 8) * 16 * 4;
    n[5] = up((size_t)B * 4);
    return n[0] + n[1] + n[2] + n[3] + n[4] + 3 * n[5] + 16;  // + the mbarrier
  }
  static size_t bytes(const Plan& q, int64_t B) {
    size_t n[6];
    return sizes(q, B, n);
  }
  __device__ Smem(unsigned char* base, const Plan& q, int64_t B) {
    size_t n[6];
    sizes(q, B, n);
    Ws = reinterpret_cast<S*>(base);
    Wr = reinterpret_cast<S*>(base += n[0]);
    Xs = reinterpret_cast<S*>(base += n[1]);
    Y = reinterpret_cast<float*>(base += n[2]);
    red = reinterpret_cast<float*>(base += n[3]);
    order = reinterpret_cast<int*>(base += n[4]);
    lens = order + n[5] / 4;
    tmp = lens + n[5] / 4;
    bar = reinterpret_cast<unsigned long long*>(reinterpret_cast<unsigned char*>(order) + 3 * n[5]);
  }
};

// What this block owns: direction d and hidden units [u0, u0 + Hb); blocks are numbered
// direction-major.
struct Slice {
  int64_t d, u0;
  __device__ Slice(int64_t D, int Hb) {
    const int per_dir = gridDim.x / (int)D;
    d = blockIdx.x / per_dir;
    u0 = (int64_t)(blockIdx.x % per_dir) * Hb;
  }
};

// order[r] = the row of rank r, lens[r] its clamped length, ranks by length, longest first, ties
// by row index (a stable order, the same in every block). O(B^2 / threads) once per launch.
__device__ inline void sort_rows(const int64_t* lengths, int64_t B, int64_t T, int* order, int* lens, int* tmp) {
  for (int64_t b = threadIdx.x; b < B; b += kThreads) tmp[b] = (int)clamp_length(lengths, b, T);
  __syncthreads();
  for (int64_t b = threadIdx.x; b < B; b += kThreads) {
    const int L = tmp[b];
    int rank = 0;
    for (int64_t o = 0; o < B; ++o) rank += tmp[o] > L || (tmp[o] == L && o < b);
    order[rank] = (int)b;
    lens[rank] = L;
  }
  __syncthreads();
}

// A chunk of nc active rows, ranks [r0, r0 + nc), at step s of direction d, and the (row, unit)
// pairs of it that a thread handles: pair k (< kItems; kItems * kThreads >= NC * Hb) is rank
// r0 + r, row b of length len, unit u = u0 + uu, token row `row` = t * B + b (t = s forward,
// len - 1 - s reverse); `on` when it exists and u < units (H for cells, P for projection outputs).
struct Pair {
  bool on = false;
  int r = 0, uu = 0;
  int64_t u = 0, b = 0, len = 0, row = 0;
};
struct Chunk {
  int r0, nc, Hb;
  int64_t u0, d, s, B;
  const int* order;
  const int* lens;
  __device__ Pair pair(int k, int64_t units) const {
    Pair m;
    const int i = threadIdx.x + k * kThreads;
    m.r = i / Hb, m.uu = i % Hb, m.u = u0 + m.uu;
    m.on = m.r < nc && m.u < units;
    if (m.on) {
      m.b = order[r0 + m.r], m.len = lens[r0 + m.r];
      m.row = (d == 1 ? m.len - 1 - s : s) * B + m.b;
    }
    return m;
  }
};

// Number of ranks among the first n with length > s (lengths sorted descending). The same in
// every thread; the forward carries n from step to step, the backward starts from B.
__device__ __forceinline__ int active_after(const int* lens, int n, int64_t s) {
  while (n > 0 && lens[n - 1] <= s) --n;
  return n;
}

// The 64-bit word of the forward's exchange: h as float, and its step tag.
__device__ __forceinline__ unsigned long long tagged(float v, int64_t tag) {
  return ((unsigned long long)(unsigned)tag << 32) | __float_as_uint(v);
}

}  // namespace persistent
}  // namespace packedrnn
