// The host side of a persistent launch: how a call maps onto the grid (plan_for: units per block,
// product widths, rows per chunk, shared memory), the compile-time width of each kernel, and the
// cooperative launch that checks co-residency first.
#pragma once

#include <type_traits>

#include "persistent_layout.cuh"

namespace packedrnn {
namespace persistent {

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

}  // namespace persistent
}  // namespace packedrnn
