// Persistent CUDA recurrence, shared part of rnn_persistent_forward.cu and rnn_persistent_backward.cu
// (two files, so that each compiles in seconds). One cooperative launch runs every step of a layer
// (both directions), with one grid-wide barrier per step; fp32, bf16 and fp16 (fp64 takes the
// per-step kernels). Framework-free; interface in rnn_cuda.h, gate math in
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
#pragma once

#include <cooperative_groups.h>
#include <cuda_runtime.h>

#include <type_traits>

#include "cells.h"
#include "dtypes.cuh"
#include "rnn_cuda.h"

namespace packedrnn {
namespace persistent {

namespace cg = cooperative_groups;

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
__device__ inline int64_t block_max_length(const int64_t* lengths, int64_t B, int64_t T) {
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

inline int pow2_at_least(int64_t n) {
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

// How a call maps onto the grid: Hb units per block (the smallest power of two that lets
// D * ceil(H / Hb) blocks fit one per SM) and the block count; Hb = 0 when the persistent kernels
// cannot take the call (a projection, an empty batch, or more than 8 units per block).
struct Layout {
  int Hb = 0, blocks = 0;
};
template <typename Params>
Layout layout_for(const Params& p) {
  int dev = 0, sms = 0;
  if (p.proj || p.B == 0 || cudaGetDevice(&dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess)
    return {};
  int Hb = 1;
  while (p.D * ((p.H + Hb - 1) / Hb) > sms) Hb *= 2;
  if (Hb > 8) return {};
  return {Hb, (int)(p.D * ((p.H + Hb - 1) / Hb))};
}

// f(std::integral_constant<int, W>()) for the W among Ws equal to `width` (compile-time widths
// for runtime sizes); cudaErrorNotSupported when none is.
template <int... Ws, typename F>
cudaError_t with_width(int width, F f) {
  cudaError_t e = cudaErrorNotSupported;
  (void)((width == Ws ? (e = f(std::integral_constant<int, Ws>()), true) : false) || ...);
  return e;
}

// Rows per warp pass: two rows share every W_hh element read from shared memory (the limit at
// larger batch), but at B <= 8 each of the 8 warps has at most one row, and pairing rows would only
// lengthen the chain of the warps that get two (measured: 5.9 -> 10.6 us per step at B=8, H=512).
inline bool two_rows(int64_t B) { return B > kWarps; }

template <typename Params, typename K1, typename K2>
cudaError_t launch(K1 one_row, K2 two_rows_kernel, const Params& p, Layout g, size_t smem,
                   cudaStream_t stream) {
  return two_rows(p.B) ? cooperative(two_rows_kernel, p, g.Hb, g.blocks, smem, stream)
                       : cooperative(one_row, p, g.Hb, g.blocks, smem, stream);
}

}  // namespace persistent
}  // namespace packedrnn
