// Persistent CUDA recurrence: one cooperative launch runs every step of a layer (both directions),
// with one grid-wide barrier per step. Framework-free; interface in rnn_cuda.h, gate math in
// cells.h, shape legend there.
//
// Block b of the grid owns direction d and hidden units [u0, u0 + Hb), and keeps on chip, for the
// whole sequence, the part of W_hh it needs:
//   forward   the NG*Hb gate rows of its units        Ws [JT][P]  (JT >= NG*Hb, zero padded)
//   backward  the Hb columns of its units (all G rows) Ws [JT][G]  (JT >= Hb)
// so W_hh is read from memory once per launch instead of once per step. Per step and active row
// (s < lengths[b]), one warp forms the row's products against Ws (lanes split the reduction, a
// butterfly of shuffles hands lane j the sum for row j of Ws), then Hb lanes update the cell.
//   forward   h_{t-1} comes from out[t-1] (reverse: out[t+1]) or h0, written by other blocks in
//             the previous step (read through L2 with __ldcg; the barrier orders it)
//   backward  dL/dh_t of the block's units = dgh[t+1] W_hh[:, units] (the previous step's gate
//             gradients of every block) + grad_out; then the gate gradients of its units
// The loop bound is max(lengths), reduced on the device. A call that does not fit (projection,
// too many units per block, shared memory, co-residency) returns cudaErrorNotSupported and the
// caller runs the per-step kernels of rnn_kernels.cu instead.
#include <cooperative_groups.h>
#include <cuda_runtime.h>

#include "cells.h"
#include "dtypes.cuh"
#include "rnn_cuda.h"

namespace cg = cooperative_groups;

namespace packedrnn {
namespace {

constexpr int kWarps = 8, kThreads = 32 * kWarps;
constexpr unsigned kFull = 0xffffffffu;

// Butterfly over a warp: lane l ends with the sum over all lanes of v[l % JT]. First the lanes
// that differ in bits >= log2(JT) add everything up; then each step over the low bits keeps half
// the values, added to the partner's matching half.
template <int JT, typename A>
__device__ __forceinline__ A lane_sums(A (&v)[JT], int lane) {
#pragma unroll
  for (int o = 16; o >= JT; o >>= 1) {
#pragma unroll
    for (int j = 0; j < JT; ++j) v[j] += __shfl_xor_sync(kFull, v[j], o);
  }
#pragma unroll
  for (int s = JT / 2; s >= 1; s >>= 1) {
    const bool upper = lane & s;
#pragma unroll
    for (int i = 0; i < s; ++i) {
      const A send = upper ? v[i] : v[i + s];
      const A keep = upper ? v[i + s] : v[i];
      v[i] = keep + __shfl_xor_sync(kFull, send, s);
    }
  }
  return v[0];
}

// One warp, R rows at once: y[r]_j = sum_k x[r][k] * W[j*K + k] for j < JT, with x in global
// memory (L2; null rows read as zero) and W in shared memory, each W element loaded once for all
// R rows (shared-memory bandwidth bounds this loop). Lane l gets y[r]_{l % JT} in out[r].
template <int JT, int R, typename A, typename S>
__device__ __forceinline__ void warp_rows_dot(const S* const (&x)[R], int64_t K, const S* W, int lane,
                                              A (&out)[R]) {
  A v[R][JT];
#pragma unroll
  for (int r = 0; r < R; ++r) {
#pragma unroll
    for (int j = 0; j < JT; ++j) v[r][j] = A(0);
  }
  for (int64_t k = lane; k < K; k += 32) {
    A xv[R];
#pragma unroll
    for (int r = 0; r < R; ++r) xv[r] = x[r] != nullptr ? to_acc(__ldcg(x[r] + k)) : A(0);
#pragma unroll
    for (int j = 0; j < JT; ++j) {
      const A wv = to_acc(W[j * K + k]);
#pragma unroll
      for (int r = 0; r < R; ++r) v[r][j] += xv[r] * wv;
    }
  }
#pragma unroll
  for (int r = 0; r < R; ++r) out[r] = lane_sums<JT>(v[r], lane);
}

// What this block owns: direction d and hidden units [u0, u0 + Hb); blocks are numbered
// direction-major. Also the thread's warp and lane.
struct Slice {
  int64_t d, u0;
  int warp, lane;
  __device__ Slice(int64_t D, int Hb) {
    const int per_dir = gridDim.x / (int)D;
    d = blockIdx.x / per_dir;
    u0 = (int64_t)(blockIdx.x % per_dir) * Hb;
    warp = threadIdx.x / 32;
    lane = threadIdx.x % 32;
  }
};

// The max of the clamped lengths, computed by every block (all of them then agree on the number
// of barriers).
__device__ int64_t block_max_length(const int64_t* lengths, int64_t B, int64_t T) {
  __shared__ unsigned long long best;
  if (threadIdx.x == 0) best = 0;
  __syncthreads();
  unsigned long long mine = 0;
  for (int64_t b = threadIdx.x; b < B; b += blockDim.x) {
    const unsigned long long L = (unsigned long long)clamp_length(lengths, b, T);
    mine = L > mine ? L : mine;
  }
  atomicMax(&best, mine);
  __syncthreads();
  return (int64_t)best;
}

// R: rows per warp pass (rows_per_pass below).
template <typename S, int NG, int JT, int R>
__global__ void __launch_bounds__(kThreads) persistent_forward(ForwardParams p, int Hb) {
  using A = typename AccOf<S>::type;
  constexpr bool lstm = NG == 4;
  extern __shared__ __align__(16) unsigned char smem[];
  S* Ws = reinterpret_cast<S*>(smem);  // [JT][P]
  __shared__ A gates[kWarps][R][JT];
  cg::grid_group grid = cg::this_grid();
  const int64_t B = p.B, H = p.H, P = p.P, G = NG * H, DP = p.D * P, TB = p.T * B;
  const Slice sl(p.D, Hb);
  const int64_t d = sl.d, u0 = sl.u0;
  const int warp = sl.warp, lane = sl.lane;
  const SavedLayout L(p.cell, H, P, false);
  const S* w = static_cast<const S*>(p.w_hh) + d * G * P;
  for (int64_t i = threadIdx.x; i < JT * P; i += kThreads) {  // row j = g*Hb + uu
    const int64_t j = i / P, k = i % P, g = j / Hb, u = u0 + j % Hb;
    if (g < NG && u < H) {
      Ws[i] = w[(g * H + u) * P + k];
    } else {
      put(Ws + i, A(0));
    }
  }
  const int64_t steps = block_max_length(p.lengths, B, p.T);  // ends with __syncthreads
  const S* out_c = static_cast<const S*>(p.out);
  S* out = static_cast<S*>(p.out);
  for (int64_t s = 0; s < steps; ++s) {
    for (int64_t b0 = (int64_t)warp * R; b0 < B; b0 += kWarps * R) {
      const S* h_prev[R];
      int64_t t[R];
      bool any = false;
#pragma unroll
      for (int r = 0; r < R; ++r) {
        const int64_t b = b0 + r, len = b < B ? clamp_length(p.lengths, b, p.T) : 0;
        t[r] = d == 1 ? len - 1 - s : s;
        const int64_t t_prev = d == 1 ? t[r] + 1 : t[r] - 1;
        h_prev[r] = s >= len ? nullptr
                    : s == 0 ? static_cast<const S*>(p.h0) + (d * B + b) * P
                             : out_c + (t_prev * B + b) * DP + d * P;
        any = any || h_prev[r] != nullptr;
      }
      if (!any) continue;  // the same for every lane of the warp
      A y[R];
      warp_rows_dot<JT, R>(h_prev, P, Ws, lane, y);
#pragma unroll
      for (int r = 0; r < R; ++r) {
        if (lane < JT) gates[warp][r][lane] = y[r];
      }
      __syncwarp();
      const int64_t u = u0 + lane;
#pragma unroll
      for (int r = 0; r < R; ++r) {
        if (h_prev[r] == nullptr || lane >= Hb || u >= H) continue;
        const int64_t b = b0 + r, row = t[r] * B + b;
        const S* gx = static_cast<const S*>(p.gx) + (d * TB + row) * G;
        S* sv = p.saved ? static_cast<S*>(p.saved) + (d * TB + row) * p.K : nullptr;
        const A hp = to_acc(__ldcg(h_prev[r] + u));
        if (sv) put(sv + L.h_prev + u, hp);
        const A* gw = gates[warp][r];
        if constexpr (lstm) {
          A* c = static_cast<A*>(p.c) + (d * B + b) * H + u;
          const A cp = *c;
          const auto o = lstm_forward<A>(to_acc(gx[u]) + gw[lane], to_acc(gx[H + u]) + gw[Hb + lane],
                                         to_acc(gx[2 * H + u]) + gw[2 * Hb + lane],
                                         to_acc(gx[3 * H + u]) + gw[3 * Hb + lane], cp);
          *c = o.c;
          if (sv) {
            put(sv + u, o.i), put(sv + H + u, o.f), put(sv + 2 * H + u, o.g), put(sv + 3 * H + u, o.o);
            put(sv + L.c_prev + u, cp);
          }
          put(out + row * DP + d * P + u, o.m);
        } else {
          const S* bh = p.b_hh ? static_cast<const S*>(p.b_hh) + d * G : nullptr;
          const A hn = gw[2 * Hb + lane] + (bh ? to_acc(bh[2 * H + u]) : A(0));
          const auto o = gru_forward<A>(to_acc(gx[u]), to_acc(gx[H + u]), to_acc(gx[2 * H + u]),
                                        gw[lane] + (bh ? to_acc(bh[u]) : A(0)),
                                        gw[Hb + lane] + (bh ? to_acc(bh[H + u]) : A(0)), hn, hp);
          if (sv) put(sv + u, o.r), put(sv + H + u, o.z), put(sv + 2 * H + u, o.n), put(sv + 3 * H + u, hn);
          put(out + row * DP + d * P + u, o.h);
        }
      }
      __syncwarp();
    }
    grid.sync();
  }
  // h_n of the block's units: each row's output at its last step, h0 for empty rows.
  for (int64_t i = threadIdx.x; i < B * Hb; i += kThreads) {
    const int64_t b = i / Hb, u = u0 + i % Hb;
    if (u >= H) continue;
    const int64_t len = clamp_length(p.lengths, b, p.T), t = d == 1 ? 0 : len - 1;
    static_cast<S*>(p.h_n)[(d * B + b) * P + u] =
        len == 0 ? static_cast<const S*>(p.h0)[(d * B + b) * P + u] : out_c[(t * B + b) * DP + d * P + u];
  }
}

template <typename S, int NG, int JT, int R>
__global__ void __launch_bounds__(kThreads) persistent_backward(BackwardParams p, int Hb) {
  using A = typename AccOf<S>::type;
  constexpr bool lstm = NG == 4;
  extern __shared__ __align__(16) unsigned char smem[];
  S* Ws = reinterpret_cast<S*>(smem);  // [JT][G]: Ws[kk][j] = W_hh[j][u0 + kk]
  cg::grid_group grid = cg::this_grid();
  const int64_t B = p.B, H = p.H, P = p.P, G = NG * H, DP = p.D * P, TB = p.T * B;
  const Slice sl(p.D, Hb);
  const int64_t d = sl.d, u0 = sl.u0;
  const int warp = sl.warp, lane = sl.lane;
  const SavedLayout L(p.cell, H, P, false);
  const S* w = static_cast<const S*>(p.w_hh) + d * G * P;
  for (int64_t i = threadIdx.x; i < JT * G; i += kThreads) {
    const int64_t kk = i / G, j = i % G, u = u0 + kk;
    if (kk < Hb && u < H) {
      Ws[i] = w[j * P + u];
    } else {
      put(Ws + i, A(0));
    }
  }
  const int64_t steps = block_max_length(p.lengths, B, p.T);
  const S* dgh_all = static_cast<const S*>(p.dgh) + d * TB * G;
  A* dh = static_cast<A*>(p.dh);          // in: grad h_n; out: grad h0 (the block's units)
  A* direct = static_cast<A*>(p.direct);  // GRU: dL/dh_t * z_t of the block's units, per row
  // Step s = steps is the extra pass that turns the gate gradients of step 0 into grad h0.
  for (int64_t s = steps - 1; s >= -1; --s) {
    for (int64_t b0 = (int64_t)warp * R; b0 < B; b0 += kWarps * R) {
      // Rows whose dL/dh comes from the step after (s + 1 < len) need a product with W_hh;
      // rows at their last step (s + 1 == len) start from grad h_n.
      const S* next[R];
      int64_t len[R];
      bool any = false;
#pragma unroll
      for (int r = 0; r < R; ++r) {
        const int64_t b = b0 + r;
        len[r] = b < B ? clamp_length(p.lengths, b, p.T) : 0;
        const int64_t t_next = d == 1 ? len[r] - 2 - s : s + 1;
        next[r] = s + 1 < len[r] ? dgh_all + (t_next * B + b) * G : nullptr;
        any = any || next[r] != nullptr;
      }
      A y[R];
      if (any) warp_rows_dot<JT, R>(next, G, Ws, lane, y);  // the same for every lane of the warp
      const int64_t u = u0 + lane;
#pragma unroll
      for (int r = 0; r < R; ++r) {
        const int64_t b = b0 + r;
        if (s >= len[r] || (s < 0 && len[r] == 0) || lane >= Hb || u >= H) continue;
        const A carry = next[r] != nullptr ? y[r] + (lstm ? A(0) : direct[(d * B + b) * H + u])
                                           : dh[(d * B + b) * P + u];
        if (s < 0) {  // the extra pass: the carry is grad h0
          dh[(d * B + b) * P + u] = carry;
          continue;
        }
        const int64_t t = d == 1 ? len[r] - 1 - s : s, row = t * B + b;
        const S* sv = static_cast<const S*>(p.saved) + (d * TB + row) * p.K;
        const A dht = to_acc(static_cast<const S*>(p.grad_out)[row * DP + d * P + u]) + carry;
        S* dgx = static_cast<S*>(p.dgx) + (d * TB + row) * G;
        if constexpr (lstm) {
          A* dc = static_cast<A*>(p.dc) + (d * B + b) * H + u;
          const auto g = lstm_backward<A>(to_acc(sv[u]), to_acc(sv[H + u]), to_acc(sv[2 * H + u]),
                                          to_acc(sv[3 * H + u]), to_acc(sv[L.c_prev + u]), dht, *dc);
          *dc = g.dc_prev;
          put(dgx + u, g.di), put(dgx + H + u, g.df), put(dgx + 2 * H + u, g.dg), put(dgx + 3 * H + u, g.do_);
        } else {
          const auto g = gru_backward<A>(to_acc(sv[u]), to_acc(sv[H + u]), to_acc(sv[2 * H + u]),
                                         to_acc(sv[3 * H + u]), to_acc(sv[L.h_prev + u]), dht);
          S* dgh = static_cast<S*>(p.dgh) + (d * TB + row) * G;
          put(dgx + u, g.dr), put(dgx + H + u, g.dz), put(dgx + 2 * H + u, g.dn);
          put(dgh + u, g.dr), put(dgh + H + u, g.dz), put(dgh + 2 * H + u, g.dhn);
          direct[(d * B + b) * H + u] = g.dh_prev;
        }
      }
    }
    if (s >= 0) grid.sync();
  }
}

int pow2_at_least(int64_t n) {
  int v = 1;
  while (v < n) v *= 2;
  return v;
}

// Launch `kernel` cooperatively if every block fits on the device at once.
template <typename Kernel, typename Params>
cudaError_t cooperative(Kernel kernel, const Params& p, int Hb, int blocks, size_t smem, cudaStream_t stream) {
  int dev = 0, optin = 0, per_sm = 0, sms = 0;
  cudaError_t e = cudaGetDevice(&dev);
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
  if (e != cudaSuccess) return e;
  if (smem + 8 * 1024 > (size_t)optin) return cudaErrorNotSupported;  // room for the static arrays
  e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
  if (e == cudaSuccess) e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, smem);
  if (e != cudaSuccess) return e;
  if (per_sm * sms < blocks) return cudaErrorNotSupported;
  Params copy = p;
  void* args[] = {(void*)&copy, (void*)&Hb};
  return cudaLaunchCooperativeKernel((const void*)kernel, dim3(blocks), dim3(kThreads), args, smem, stream);
}

// Units per block: the smallest power of two that lets D * ceil(H / Hb) blocks fit one per SM.
int units_per_block(int64_t H, int64_t D) {
  int dev = 0, sms = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess)
    return 0;
  int Hb = 1;
  while (D * ((H + Hb - 1) / Hb) > sms) Hb *= 2;
  return Hb;
}

// Rows per warp pass: two rows share every W_hh element read from shared memory (the limit at
// larger batch), but at B <= 8 each of the 8 warps has at most one row, and pairing rows would only
// lengthen the chain of the warps that get two (measured: 5.9 -> 10.6 us per step at B=8, H=512).
// Double keeps one row (two would not fit the accumulators in registers).
template <typename S>
bool two_rows(int64_t B) {
  return sizeof(S) != 8 && B > kWarps;
}

template <typename S, typename Params, typename K1, typename K2>
cudaError_t launch(K1 one_row, K2 two_rows_kernel, const Params& p, int Hb, int blocks, size_t smem,
                   cudaStream_t stream) {
  return two_rows<S>(p.B) ? cooperative(two_rows_kernel, p, Hb, blocks, smem, stream)
                          : cooperative(one_row, p, Hb, blocks, smem, stream);
}

template <typename S, int NG>
cudaError_t forward_dispatch(const ForwardParams& p, cudaStream_t stream) {
  const int Hb = units_per_block(p.H, p.D);
  const int JT = pow2_at_least(NG * Hb);
  if (p.proj || Hb == 0 || JT > 32 || p.B == 0) return cudaErrorNotSupported;
  const int blocks = (int)(p.D * ((p.H + Hb - 1) / Hb));
  const size_t smem = (size_t)JT * p.P * sizeof(S);
  constexpr int R2 = sizeof(S) == 8 ? 1 : 2;  // never launched for double (two_rows)
#define PACKEDRNN_FORWARD(JTV)                                                                     \
  case JTV:                                                                                       \
    return launch<S>(persistent_forward<S, NG, JTV, 1>, persistent_forward<S, NG, JTV, R2>, p, Hb, \
                              blocks, smem, stream);
  switch (JT) {
    PACKEDRNN_FORWARD(4)
    PACKEDRNN_FORWARD(8)
    PACKEDRNN_FORWARD(16)
    PACKEDRNN_FORWARD(32)
  }
#undef PACKEDRNN_FORWARD
  return cudaErrorNotSupported;
}

template <typename S, int NG>
cudaError_t backward_dispatch(const BackwardParams& p, cudaStream_t stream) {
  const int Hb = units_per_block(p.H, p.D);
  if (p.proj || Hb == 0 || Hb > 8 || p.B == 0 || (NG == 3 && p.direct == nullptr)) return cudaErrorNotSupported;
  const int blocks = (int)(p.D * ((p.H + Hb - 1) / Hb));
  const size_t smem = (size_t)Hb * NG * p.H * sizeof(S);
  constexpr int R2 = sizeof(S) == 8 ? 1 : 2;
#define PACKEDRNN_BACKWARD(JTV)                                                                    \
  case JTV:                                                                                       \
    return launch<S>(persistent_backward<S, NG, JTV, 1>, persistent_backward<S, NG, JTV, R2>, p, Hb, \
                              blocks, smem, stream);
  switch (Hb) {
    PACKEDRNN_BACKWARD(1)
    PACKEDRNN_BACKWARD(2)
    PACKEDRNN_BACKWARD(4)
    PACKEDRNN_BACKWARD(8)
  }
#undef PACKEDRNN_BACKWARD
  return cudaErrorNotSupported;
}

}  // namespace

cudaError_t rnn_forward_persistent(const ForwardParams& p, DType dtype, cudaStream_t stream) {
  PACKEDRNN_DISPATCH(forward_dispatch, p, dtype, stream)
}

cudaError_t rnn_backward_persistent(const BackwardParams& p, DType dtype, cudaStream_t stream) {
  PACKEDRNN_DISPATCH(backward_dispatch, p, dtype, stream)
}

}  // namespace packedrnn
