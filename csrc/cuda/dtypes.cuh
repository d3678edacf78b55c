// Storage and accumulation types shared by the CUDA kernels (framework-free). Half types load and
// store through explicit intrinsics: torch builds with __CUDA_NO_HALF_CONVERSIONS__ and friends.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

#include "cells.h"
#include "rnn_cuda.h"

namespace packedrnn {

// Accumulation type of a storage type S: double for double, float otherwise.
template <typename S> struct AccOf { using type = float; };
template <> struct AccOf<double> { using type = double; };

__device__ __forceinline__ float to_acc(float v) { return v; }
__device__ __forceinline__ double to_acc(double v) { return v; }
__device__ __forceinline__ float to_acc(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ void put(float* p, float v) { *p = v; }
__device__ __forceinline__ void put(double* p, double v) { *p = v; }
__device__ __forceinline__ void put(__half* p, float v) { *p = __float2half(v); }
__device__ __forceinline__ void put(__nv_bfloat16* p, float v) { *p = __float2bfloat16(v); }

// lengths[b] clamped to [0, T]: values are checked before any call, this only keeps a bad value
// from ever indexing out of range.
__device__ __forceinline__ int64_t clamp_length(const int64_t* lengths, int64_t b, int64_t T) {
  const int64_t L = lengths[b];
  return L < 0 ? 0 : (L > T ? T : L);
}

// Row of position pos = t*B + b of direction d in the buffers laid out by `token` (rnn_cuda.h: gx,
// saved; the backward's dgx, dgh and dH): [D, T*B, *] by position, or [D, tokens, *].
template <typename Params>
__device__ __forceinline__ int64_t token_row(const Params& p, int64_t d, int64_t pos) {
  return p.token != nullptr ? d * p.tokens + p.token[pos] : d * p.T * p.B + pos;
}

}  // namespace packedrnn

namespace packedrnn {

// fn(S(), Cell()) for the storage type S named by `dtype` and the cell of code `cell` (cells.h);
// `none` when there is no such cell.
template <typename R, typename F>
R dispatch(int64_t cell, DType dtype, R none, F&& fn) {
  R r = none;
  with_cell(cell, [&](auto c) {
    switch (dtype) {
      case DType::f32: r = fn(float(), c); break;
      case DType::f64: r = fn(double(), c); break;
      case DType::f16: r = fn(__half(), c); break;
      case DType::bf16: r = fn(__nv_bfloat16(), c); break;
    }
  });
  return r;
}

}  // namespace packedrnn

// return FN<S, Cell>(P, ARGS...) for P's storage type (DTYPE) and cell.
#define PACKEDRNN_DISPATCH(FN, P, DTYPE, ...) \
  return dispatch(P.cell, DTYPE, cudaErrorInvalidValue, \
                  [&](auto s_, auto c_) { return FN<decltype(s_), decltype(c_)>(P, __VA_ARGS__); });
