// Persistent CUDA recurrence, shared part of persistent_forward.cuh, persistent_backward.cuh and
// rnn_persistent_backward_reduce.cu (instantiated one dtype per .cu file, so that each compiles in
// seconds). One cooperative launch runs every step of a layer, both directions; fp32, bf16 and fp16
// (fp64 takes the per-step kernels). Framework-free; interface in rnn_cuda.h, gate math in cells.h,
// shape legend there.
//
// Block b of the grid owns direction d and hidden units [u0, u0 + Hb) and keeps on chip, for the
// whole sequence, the part of W_hh it needs, as JT rows of K values:
//   forward   the NG*Hb gate rows of its units            Ws [JT][ld]  K = P
//   backward  the Hb columns of its units (all G rows)     Ws [JT][ld]  K = G
// so W_hh is read from memory once per launch instead of once per step. LSTM with a projection
// (proj_size, P < H) also keeps the part of W_hr that its units touch, Wr, and runs a second
// product per step (forward h_t = m_t W_hr^T, backward dL/dm = dL/dh W_hr) after a second grid
// barrier; the units u < P of a block own the projection's outputs u. Per step, the block works
// through the active rows in chunks of NC: it stages their recurrent operand X (forward: h_{t-1},
// backward: the next step's gate gradients) in shared memory, Xs [NC][ld], forms Y = Ws X^T with
// every thread (block_gemm: FFMA for fp32, tensor cores for bf16/fp16), then updates the cell of
// each (row, unit) pair.
//
// Rows are taken longest first (`order`, sorted once per launch on the device), so the active rows
// of step s are the first n_s = #{b : lengths[b] > s}: finished rows cost nothing. The loop bound is
// max(lengths), also found on the device.
//
// How steps are ordered across blocks:
//   forward   small B*P: no grid barrier; h_t travels through `xch` as 64-bit words {h as float,
//             tag = t + 1} written with one store, so a reader that sees the tag it waits for also
//             sees the value (the low-latency protocol of NCCL's LL transport). Two slots, by step
//             parity, suffice: a block writes slot s&1 at step s+2 only after it has read every
//             block's h_{s+1}, which each block wrote after reading slot s&1 at step s+1.
//             Larger B*P: h is read back from `out` after one grid barrier per step (the tagged
//             words carry 2-4x the bytes of h, and every block reads all of h).
//   backward  one grid barrier per step. The staged form reads the next step's gate gradients (4x
//             the size of h); the reduce form, fp32's, exchanges partial sums of dL/dh instead
//             (rnn_persistent_backward_reduce.cu).
// Staging from memory written before a barrier uses one TMA bulk copy per row on sm_90 and later,
// cp.async before (Stage). Cooperative launch guarantees that all blocks are resident, which both
// schemes rely on. A call that does not fit (more than 16 units per block, or 8 for an fp32
// forward; shared memory; co-residency) returns cudaErrorNotSupported and the caller runs the
// per-step kernels of rnn_kernels.cu instead.
#pragma once

#include <cooperative_groups.h>
#include <cuda_runtime.h>

#include <cstdio>
#include <type_traits>

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

// The backward's cell (cells/*.h), shared by its two forms. v holds, for pair m: the kAct saved
// activations, the cell's `prev` (SavedLayout::prev: c_prev or h_prev), -, and dc (cells with a
// cell state) or the direct term of dL/dh (cells with one); v[5] is the caller's. load_cell reads
// the saved values and dc; cell_backward takes dL/d(the cell's output) (dL/dh_t, or dL/dm with a
// projection), writes dgx (and dgh where it differs), dc or the direct term, and returns in gh
// the gradients of the products with W_hh.
template <typename S, typename Cell>
__device__ void load_cell(const BackwardParams& p, int64_t d, const Pair& m, float (&v)[7]) {
  static_assert(Cell::kAct <= 4, "v holds at most 4 activations");
  const int64_t H = p.H;
  const SavedLayout L = SavedLayout::of<Cell>(H, p.P, p.proj);
  const S* sv = static_cast<const S*>(p.saved) + token_row(p, d, m.row) * p.K;
#pragma unroll
  for (int g = 0; g < Cell::kAct; ++g) v[g] = to_acc(sv[g * H + m.u]);
  v[4] = to_acc(sv[L.prev + m.u]);
  if (Cell::kCellState) v[6] = static_cast<const float*>(p.dc)[(d * p.B + m.b) * H + m.u];
}
template <typename S, typename Cell>
__device__ void cell_backward(const BackwardParams& p, int64_t d, const Pair& m, const float (&v)[7], float dout,
                              float (&gh)[Cell::kGates]) {
  constexpr int NG = Cell::kGates;
  const int64_t H = p.H, u = m.u, row = token_row(p, d, m.row) * NG * H, at = (d * p.B + m.b) * H + u;
  float act[Cell::kAct];
#pragma unroll
  for (int k = 0; k < Cell::kAct; ++k) act[k] = v[k];
  const auto g = Cell::backward(act, v[4], dout, Cell::kCellState ? v[6] : 0.f);
  if (Cell::kCellState) static_cast<float*>(p.dc)[at] = g.dc_prev;
  if (Cell::kDirect) static_cast<float*>(p.direct)[at] = g.direct;
  S* dgx = static_cast<S*>(p.dgx) + row;
  S* dgh = static_cast<S*>(p.dgh) + row;
#pragma unroll
  for (int k = 0; k < NG; ++k) {
    gh[k] = g.dh[k];
    put(dgx + k * H + u, g.dx[k]);
    if (Cell::kBiasApart) put(dgh + k * H + u, g.dh[k]);
  }
}

// Number of ranks among the first n with length > s (lengths sorted descending). The same in
// every thread; the forward carries n from step to step, the backward starts from B.
__device__ __forceinline__ int active_after(const int* lens, int n, int64_t s) {
  while (n > 0 && lens[n - 1] <= s) --n;
  return n;
}

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

// The products Y[j][r] = sum_k Ws[j][k] * Xs[r][k] (j < JT rows of Ws, r < n <= NC rows of Xs),
// with every thread of the block: block_gemm. fp32 runs on the CUDA cores (FFMA, exact fp32
// products); bf16 and fp16 run on the tensor cores (mma.sync, fp32 accumulation). fp32 through
// 3xTF32 tensor-core products was built and measured slower than FFMA here (RESULTS.md).

// --- fp32: FFMA -------------------------------------------------------------------------------

__device__ __forceinline__ void load4(const float* p, float (&v)[4]) {
  const float4 x = *reinterpret_cast<const float4*>(p);
  v[0] = x.x, v[1] = x.y, v[2] = x.z, v[3] = x.w;
}

// One group of nr <= NR rows: Y[j][r0 + r]. Branch-free inner loop (rows past nr re-read row
// nr - 1, and their sums are dropped), so the NR shared-memory loads of a step issue back to back:
// with 8 warps per SM the loop is bound by load latency unless each warp keeps many in flight.
// A thread holds RJ rows of Ws, JG = JT / RJ apart (w points at the first): RJ = 2 (where JT >= 16)
// loads each row of Xs once for twice the products (fp32 steps 1-8% faster on an H200, RESULTS.md).
template <int NR, int JT, int RJ>
__device__ __forceinline__ void gemm_group(const Gemm& gm, int NC, const float* w, const float* x, int nr, int r0,
                                           float* red, float* Y) {
  constexpr int JG = JT / RJ;                  // threads along the rows of Ws
  constexpr int stride = 4 * (kThreads / JG);  // between a thread's pieces of K
  const int j = threadIdx.x % JG, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  int off[NR];
#pragma unroll
  for (int r = 0; r < NR; ++r) off[r] = min(r, nr - 1) * gm.ld;
  float acc[RJ][NR];
#pragma unroll
  for (int i = 0; i < RJ; ++i) {
#pragma unroll
    for (int r = 0; r < NR; ++r) acc[i][r] = 0.f;
  }
  [[maybe_unused]] constexpr int unroll = RJ == 1 ? 2 : 1;  // within 255 registers
#pragma unroll unroll
  for (int kk = 0; kk < gm.Kp; kk += stride) {
    float wv[RJ][4], xv[NR][4];
#pragma unroll
    for (int i = 0; i < RJ; ++i) load4(w + i * JG * gm.ld + kk, wv[i]);
#pragma unroll
    for (int r = 0; r < NR; ++r) load4(x + off[r] + kk, xv[r]);
#pragma unroll
    for (int i = 0; i < RJ; ++i) {
#pragma unroll
      for (int r = 0; r < NR; ++r) {
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[i][r] = fmaf(wv[i][e], xv[r][e], acc[i][r]);
      }
    }
  }
#pragma unroll
  for (int o = JG; o < 32; o <<= 1) {  // the slices of the same rows inside the warp
#pragma unroll
    for (int i = 0; i < RJ; ++i) {
#pragma unroll
      for (int r = 0; r < NR; ++r) acc[i][r] += __shfl_xor_sync(0xffffffffu, acc[i][r], o);
    }
  }
  if (lane < JG) {
#pragma unroll
    for (int i = 0; i < RJ; ++i) {
#pragma unroll
      for (int r = 0; r < NR; ++r) red[(warp * JT + j + i * JG) * kTile + r] = acc[i][r];
    }
  }
  __syncthreads();
  for (int e = threadIdx.x; e < JT * nr; e += kThreads) {  // then across the warps
    const int jj = e / nr, r = e % nr;
    float v = 0.f;
#pragma unroll
    for (int wi = 0; wi < kWarps; ++wi) v += red[(wi * JT + jj) * kTile + r];
    Y[jj * NC + r0 + r] = v;
  }
  __syncthreads();
}

// Thread t takes row j = t % JG of Ws (and j + JG, ... up to RJ rows) and slice c = t / JG of K:
// the pieces of four values at k = 4 * (c + i * kThreads / JG), interleaved so that the slices of
// one warp read adjacent 16-byte pieces (distinct banks; lanes that share c read the same Xs
// address: a broadcast). It holds 4 * RJ Ws values at a time in registers against up to kTile
// rows of Xs. The slices are summed with shuffles inside a warp, then through `red` across warps.
template <int JT, int RJ>
__device__ void block_gemm_ffma(const Gemm& gm, int NC, const float* Ws, const float* Xs, int n, int groups,
                                float* red, float* Y) {
  constexpr int JG = JT / RJ;
  static_assert(JG <= 32, "a warp holds all slices of at most 32 / JG rows");
  const int k0 = 4 * (threadIdx.x / JG);
  const float* w = Ws + (size_t)(threadIdx.x % JG) * gm.ld + k0;
  for (int r0 = 0; r0 < n; r0 += kTile) {
    tile_ready(groups, r0 / kTile);
    const int nr = min(kTile, n - r0);
    const float* x = Xs + (size_t)r0 * gm.ld + k0;
    if (nr > 8) {
      gemm_group<16, JT, RJ>(gm, NC, w, x, nr, r0, red, Y);
    } else if (nr > 4) {
      gemm_group<8, JT, RJ>(gm, NC, w, x, nr, r0, red, Y);
    } else if (nr > 2) {
      gemm_group<4, JT, RJ>(gm, NC, w, x, nr, r0, red, Y);
    } else {
      gemm_group<2, JT, RJ>(gm, NC, w, x, nr, r0, red, Y);
    }
  }
}

// --- bf16 and fp16: tensor cores ----------------------------------------------------------------
// One warp: D(16x8, fp32) += A(16x16) B(16x8), A rows of Xs, B columns = rows of Ws (at few rows
// the other way round: block_gemm_mma_gates). Fragment layouts of mma.m16n8k16 (PTX ISA),
// g = lane / 4, q = lane % 4, two 16-bit values per register:
//   A {A[g][2q..2q+1], A[g+8][2q..], A[g][2q+8..], A[g+8][2q+8..]}   B {B[2q..2q+1][g], B[2q+8..][g]}
//   D {D[g][2q], D[g][2q+1], D[g+8][2q], D[g+8][2q+1]}

// d[t] += A B_t over k in [k, k + 16) for NT column tiles: A rows from x0 (row g) and x8 (row
// g + 8), B_t from w[t] (row t*8 + g of Ws).
template <int NT, typename S>
__device__ __forceinline__ void mma_step(float (&d)[NT][4], const S* x0, const S* x8,
                                         const S* const (&w)[NT], int k, int q4) {
  const int c = k + 2 * q4;
  const unsigned a[4] = {*reinterpret_cast<const unsigned*>(x0 + c), *reinterpret_cast<const unsigned*>(x8 + c),
                         *reinterpret_cast<const unsigned*>(x0 + c + 8),
                         *reinterpret_cast<const unsigned*>(x8 + c + 8)};
#pragma unroll
  for (int t = 0; t < NT; ++t) {
    const unsigned b[2] = {*reinterpret_cast<const unsigned*>(w[t] + c),
                           *reinterpret_cast<const unsigned*>(w[t] + c + 8)};
    mma(d[t], a, b, S());
  }
}

// The rows of Xs go in tiles of 16 (the m of the mma), all JT rows of Ws at once (NT tiles of 8:
// the n), so each Xs fragment is loaded once. With fewer tiles than warps, the warps of a tile
// split K and add their parts through `red`. Rows past n and Ws rows past JT read the last valid
// row and are dropped.
template <int JT, typename S>
__device__ void block_gemm_mma(const Gemm& gm, int NC, const S* Ws, const S* Xs, int n, int groups, float* red,
                               float* Y) {
  constexpr int NT = JT >= 8 ? JT / 8 : 1;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, q4 = lane % 4;
  const int tiles = (n + kTile - 1) / kTile;
  int split = 1;  // warps per tile
  while (split < kWarps && tiles * split * 2 <= kWarps) split *= 2;
  const int part = warp % split, span = gm.Kp / split;  // Kp is a multiple of 128 = 8 * 16
  const S* w[NT];
#pragma unroll
  for (int t = 0; t < NT; ++t) w[t] = Ws + (size_t)min(t * 8 + g, JT - 1) * gm.ld;
  const int per_round = kWarps / split;  // tiles the warps take at once
  for (int first = 0; first < tiles; first += per_round) {
    tile_ready(groups, min(first + per_round, tiles) - 1);
    const int m = first + warp / split;
    if (m >= tiles) continue;
    const int m0 = m * kTile;
    const S* x0 = Xs + (size_t)min(m0 + g, n - 1) * gm.ld;
    const S* x8 = Xs + (size_t)min(m0 + g + 8, n - 1) * gm.ld;
    float d[NT][4];
#pragma unroll
    for (int t = 0; t < NT; ++t) d[t][0] = d[t][1] = d[t][2] = d[t][3] = 0.f;
#pragma unroll 2
    for (int k = part * span; k < (part + 1) * span; k += 16) mma_step<NT>(d, x0, x8, w, k, q4);
#pragma unroll
    for (int t = 0; t < NT; ++t) {
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        if (split > 1) {
          red[(warp * NT + t) * 128 + lane * 4 + i] = d[t][i];
        } else {
          const int r = m0 + g + 8 * (i / 2), j = t * 8 + 2 * q4 + i % 2;
          if (r < n && j < JT) Y[j * NC + r] = d[t][i];
        }
      }
    }
  }
  if (split > 1) {
    __syncthreads();
    for (int e = threadIdx.x; e < tiles * NT * 128; e += kThreads) {
      const int m = e / (NT * 128), t = e / 128 % NT, l = e % 128 / 4, i = e % 4;
      const int r = m * kTile + l / 4 + 8 * (i / 2), j = t * 8 + 2 * (l % 4) + i % 2;
      if (r >= n || j >= JT) continue;
      float v = 0.f;
      for (int p = 0; p < split; ++p) v += red[((m * split + p) * NT + t) * 128 + l * 4 + i];
      Y[j * NC + r] = v;
    }
  }
  __syncthreads();
}

// Few rows (n <= 8): the product the other way round, D(16x8) += A B with A = 16 rows of Ws (the
// m) and B = the tile of 8 rows of Xs (the n). That is half the mma of block_gemm_mma, whose m
// would be the rows (half of it padding), and half the reads of Xs. The JT / 16 tiles of Ws rows
// take kWarps / (JT / 16) warps each, which split K and add their parts through `red`. Two
// accumulators (even and odd k) halve the chain of dependent mma.
template <int JT, typename S>
__device__ void block_gemm_mma_gates(const Gemm& gm, int NC, const S* Ws, const S* Xs, int n, int groups,
                                     float* red, float* Y) {
  static_assert(JT >= 16 && JT <= 16 * kWarps / 2, "two warps or more per tile of 16 rows of Ws");
  constexpr int MT = JT / 16, split = kWarps / MT;  // tiles of Ws rows, warps per tile
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, q4 = lane % 4;
  const int m = warp % MT, part = warp / MT, span = gm.Kp / split;  // Kp: a multiple of 128
  auto word = [](const S* p) { return *reinterpret_cast<const unsigned*>(p); };
  tile_ready(groups, 0);
  const S* w0 = Ws + (size_t)(m * 16 + g) * gm.ld + 2 * q4;
  const S* w8 = w0 + 8 * (size_t)gm.ld;
  const S* x = Xs + (size_t)min(g, n - 1) * gm.ld + 2 * q4;
  float d[2][4] = {};  // [k parity]
#pragma unroll 2
  for (int k = part * span; k < (part + 1) * span; k += 16) {
    const unsigned a[4] = {word(w0 + k), word(w8 + k), word(w0 + k + 8), word(w8 + k + 8)};
    const unsigned b[2] = {word(x + k), word(x + k + 8)};
    mma(d[(k / 16) & 1], a, b, S());
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) red[warp * 128 + lane * 4 + i] = d[0][i] + d[1][i];
  __syncthreads();
  for (int e = threadIdx.x; e < MT * 128; e += kThreads) {
    const int mm = e / 128, l = e % 128 / 4, i = e % 4;
    const int r = 2 * (l % 4) + i % 2, j = mm * 16 + l / 4 + 8 * (i / 2);
    if (r >= n) continue;
    float v = 0.f;
    for (int pp = 0; pp < split; ++pp) v += red[(pp * MT + mm) * 128 + l * 4 + i];
    Y[j * NC + r] = v;
  }
  __syncthreads();
}

// Fixed order throughout, so results are bitwise repeatable. `groups`: what stage_rows returned
// for Xs. Every thread of the block must call it; it ends past a __syncthreads.
template <int JT, typename S>
__device__ void block_gemm(const Gemm& gm, int NC, const S* Ws, const S* Xs, int n, int groups, float* red,
                           float* Y) {
  if constexpr (std::is_same<S, float>::value) {
    block_gemm_ffma<JT, JT >= 16 ? 2 : 1>(gm, NC, Ws, Xs, n, groups, red, Y);
  } else {
    if constexpr (JT >= 16) {
      if (n <= 8) return block_gemm_mma_gates<JT>(gm, NC, Ws, Xs, n, groups, red, Y);
    }
    block_gemm_mma<JT>(gm, NC, Ws, Xs, n, groups, red, Y);
  }
}

// The 64-bit word of the forward's exchange: h as float, and its step tag.
__device__ __forceinline__ unsigned long long tagged(float v, int64_t tag) {
  return ((unsigned long long)(unsigned)tag << 32) | __float_as_uint(v);
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

// Launch `kernel` cooperatively if every block fits on the device at once.
template <typename Kernel, typename Params>
cudaError_t cooperative(Kernel kernel, const Params& p, const Plan& q, cudaStream_t stream) {
  int dev = 0, optin = 0, per_sm = 0, sms = 0;
  cudaError_t e = cudaGetDevice(&dev);
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
  if (e != cudaSuccess) return e;
  if (q.smem > (size_t)optin) return cudaErrorNotSupported;
  e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)q.smem);
  if (e == cudaSuccess) e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, q.smem);
  if (e != cudaSuccess) return e;
  if (per_sm * sms < q.blocks) return cudaErrorNotSupported;
  return launch_cooperative(kernel, q.blocks, kThreads, q.smem, stream, p, q);
}

inline int pow2_at_least(int64_t n) {
  int v = 1;
  while (v < n) v *= 2;
  return v;
}

// The product of JT >= rows rows of Ws with K values each, K padded so that the slices of
// block_gemm cover it in whole rounds: 128 = 8 warps x k16 (mma), 4 * kThreads / JT (FFMA).
template <typename S>
Gemm gemm_for(int64_t rows, int64_t K) {
  Gemm gm;
  gm.JT = pow2_at_least(rows);
  gm.K = (int)K;
  const int round = 4 * kThreads / gm.JT > 128 ? 4 * kThreads / gm.JT : 128;
  gm.Kp = (int)((K + round - 1) / round * round);
  gm.ld = gm.Kp + 16 / (int)sizeof(S);
  return gm;
}

// How a call maps onto the grid: Hb units per block (the smallest power of two that lets
// D * ceil(H / Hb) blocks fit one per SM), the recurrent product (rows_per_unit * Hb rows of K
// values), the projection's (Hb rows of proj_K values; proj_K = 0 without a projection), and the
// largest chunk of rows that fits in shared memory. Hb = 0 when the persistent kernels cannot take
// the call (an empty batch, more than kMaxUnits units per block, or no room for one row).
template <typename S, typename Params>
Plan plan_for(const Params& p, int rows_per_unit, int64_t K, int64_t proj_K, bool staged = true) {
  Plan q;
  q.staged = staged;
  int dev = 0, sms = 0, optin = 0;
  if (p.B == 0 || cudaGetDevice(&dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess)
    return {};
  int Hb = 1;
  while (p.D * ((p.H + Hb - 1) / Hb) > sms) Hb *= 2;
  if (Hb > kMaxUnits) return {};
  q.Hb = Hb;
  int major = 0;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess) return {};
  q.bulk = choose_bulk_staging(major);
  q.blocks = (int)(p.D * ((p.H + Hb - 1) / Hb));
  q.rec = gemm_for<S>(rows_per_unit * Hb, K);
  if (proj_K > 0) q.proj = gemm_for<S>(Hb, proj_K);
  for (int nc = (int)(p.B < kItems * kThreads / Hb ? p.B : kItems * kThreads / Hb); nc >= 1; --nc) {
    q.NC = nc >= kTile ? nc / kTile * kTile : nc;
    q.smem = Smem<S>::bytes(q, p.B);
    if (q.smem <= (size_t)optin) return q;
    nc = q.NC;
  }
  return {};
}

// f(std::integral_constant<int, W>()) for the W among Ws equal to `width` (compile-time widths
// for runtime sizes); cudaErrorNotSupported when none is.
template <int... Ws, typename F>
cudaError_t with_width(int width, F f) {
  cudaError_t e = cudaErrorNotSupported;
  (void)((width == Ws ? (e = f(std::integral_constant<int, Ws>()), true) : false) || ...);
  return e;
}

// The backward's reduce form (rnn_persistent_backward_reduce.cu); cudaErrorNotSupported where it
// is not asked for or does not fit.
cudaError_t backward_reduce(const BackwardParams& p, DType dtype, cudaStream_t stream);

}  // namespace persistent
}  // namespace packedrnn
