// CUDA recurrence of packedrnn::rnn_layer / rnn_layer_backward. Framework-free: cuda_runtime.h and
// our headers only; the gate math is cells.h; interface, shapes and pointer dtypes: rnn_cuda.h.
//
// Per step s (one launch each, T launches; blocks whose rows are all finished exit at once):
//   forward   forward_step        gates = gx[t] + h_{t-1} W_hh^T, fused with the cell update;
//                                 h_{t-1} is read from out[t-1] (reverse: out[t+1]) or h0
//             forward_projection  h = m W_hr^T (LSTM with proj_size only)
//   backward  backward_dh, backward_projection   dL/dh and dL/dm (projection only)
//             backward_cell       gate gradients of the step, into dgx/dgh rows
//             backward_recurrent  dL/dh_{t-1} = dgh W_hh (+ the direct term of a cell with one: GRU dh z)
// With StepProducts (rnn_cuda.h; recurrence "gemm", rules.h) the caller forms the recurrent
// products of a step with cuBLAS over dense buffers of every row (hbuf, dgbuf, which the kernels
// keep), and forward_step / backward_recurrent read them instead of running tile_dot. The next
// backward step's first kernel (backward_cell, or backward_dh with a projection) reads the product
// itself, so backward_recurrent runs only after the last step (for dL/dh0): one launch per step
// fewer, where launches are the cost.
// Time index of row b at step s: t = s forward, t = lengths[b]-1-s reverse; the row is active
// while s < lengths[b]. Blocks are 8 rows x 32 columns; each reduction is staged through shared
// memory 32 deep. Half types load and store as half and accumulate in float.
#include <cuda_runtime.h>

#include "cells.h"
#include "dtypes.cuh"
#include "hardware.cuh"  // or, under PACKEDRNN_EMULATE, the CPU emulator's
#include "rnn_cuda.h"

namespace packedrnn {
namespace {

constexpr int kRows = 8, kCols = 32, kDepth = 32, kThreads = kRows * kCols;
static_assert(kDepth == kCols, "the A tile is loaded one element per thread");

// Where row b stands at step s.
struct RowStep {
  int64_t t;
  bool active;
  bool later;  // active at step s + 1 too (the step the backward ran before this one)
};
__device__ __forceinline__ RowStep row_step(const int64_t* lengths, int64_t B, int64_t T, int64_t b,
                                            int64_t s, bool reverse) {
  if (b >= B) return {0, false, false};
  const int64_t L = clamp_length(lengths, b, T);
  return {reverse ? L - 1 - s : s, s < L, s + 1 < L};
}

// Row b's place in the dense buffers of the caller's products (StepProducts).
__device__ __forceinline__ int64_t place(const int64_t* slot, int64_t b) { return slot ? slot[b] : b; }

// acc[g] = sum_k rows[ty][k] * W(g*N + n, k) for the block's kRows rows and column n = n0 + tx,
// where W(j, k) = w[j*ldw + k] (NT: rows of W along k) or w[k*ldw + j] (NN). Null rows are
// finished rows: they read as zero. Every thread of the block must call it.
template <int NG, bool NT, typename S, typename A>
__device__ void tile_dot(const S* const* rows, int64_t K, const S* __restrict__ w, int64_t ldw,
                         int64_t N, int64_t n0, A (&acc)[NG]) {
  __shared__ A As[kRows][kDepth];
  __shared__ A Ws[NG][kDepth][kCols + 1];
  const int tx = threadIdx.x % kCols, ty = threadIdx.x / kCols;
#pragma unroll
  for (int g = 0; g < NG; ++g) acc[g] = A(0);
  for (int64_t k0 = 0; k0 < K; k0 += kDepth) {
    const S* a = rows[ty];
    As[ty][tx] = (a != nullptr && k0 + tx < K) ? to_acc(a[k0 + tx]) : A(0);
    for (int i = threadIdx.x; i < NG * kDepth * kCols; i += kThreads) {
      // Consecutive threads read consecutive addresses in either layout.
      const int g = i / (kDepth * kCols);
      const int kk = NT ? i % kDepth : (i / kCols) % kDepth;
      const int j = NT ? (i / kDepth) % kCols : i % kCols;
      const int64_t k = k0 + kk, n = n0 + j;
      A v = A(0);
      if (k < K && n < N) v = to_acc(NT ? w[(g * N + n) * ldw + k] : w[k * ldw + g * N + n]);
      Ws[g][kk][j] = v;
    }
    __syncthreads();
#pragma unroll 8
    for (int kk = 0; kk < kDepth; ++kk) {
      const A av = As[ty][kk];
#pragma unroll
      for (int g = 0; g < NG; ++g) acc[g] += av * Ws[g][kk][tx];
    }
    __syncthreads();
  }
}

template <typename S, typename Cell>
__global__ void __launch_bounds__(kThreads) forward_step(ForwardParams p, int64_t s) {
  using A = typename AccOf<S>::type;
  constexpr int NG = Cell::kGates;
  const int tx = threadIdx.x % kCols, ty = threadIdx.x / kCols;
  const int64_t d = blockIdx.z, b = blockIdx.y * kRows + ty, u = blockIdx.x * kCols + tx;
  const int64_t B = p.B, H = p.H, P = p.P, G = NG * H, DP = p.D * P;
  const RowStep rs = row_step(p.lengths, B, p.T, b, s, d == 1);
  const S* out = static_cast<const S*>(p.out);
  __shared__ const S* rows[kRows];
  if (tx == 0) {
    const int64_t t_prev = d == 1 ? rs.t + 1 : rs.t - 1;
    rows[ty] = !rs.active ? nullptr
               : s == 0   ? static_cast<const S*>(p.h0) + (d * B + b) * P
                          : out + (t_prev * B + b) * DP + d * P;
  }
  if (!__syncthreads_or(rs.active)) return;
  A acc[NG];
  if (p.gh != nullptr) {
    if (!rs.active || u >= H) return;
    const A* gh = static_cast<const A*>(p.gh) + (d * B + place(p.slot, b)) * G + u;
#pragma unroll
    for (int g = 0; g < NG; ++g) acc[g] = gh[g * H];
  } else {
    tile_dot<NG, true>(rows, P, static_cast<const S*>(p.w_hh) + d * G * P, P, H, blockIdx.x * kCols, acc);
    if (!rs.active || u >= H) return;
  }
  S* hbuf = p.hbuf ? static_cast<S*>(p.hbuf) + (d * B + place(p.slot, b)) * P + u : nullptr;

  const bool proj = Cell::kProjection && p.proj;
  const SavedLayout L = SavedLayout::of<Cell>(H, P, proj);
  const int64_t row = rs.t * B + b;
  const S* gx = static_cast<const S*>(p.gx) + token_row(p, d, row) * G;
  const S* h_prev = rows[ty];
  S* sv = p.saved ? static_cast<S*>(p.saved) + token_row(p, d, row) * p.K : nullptr;
  S* o = static_cast<S*>(p.out) + row * DP + d * P;
  if (sv && u < P) put(sv + L.h_prev + u, to_acc(h_prev[u]));
  A x[NG], y[NG];  // the cell's input and recurrent projections (y with b_hh where kept apart)
  const S* bh = Cell::kBiasApart && p.b_hh ? static_cast<const S*>(p.b_hh) + d * G : nullptr;
#pragma unroll
  for (int g = 0; g < NG; ++g) {
    x[g] = to_acc(gx[g * H + u]);
    y[g] = bh ? acc[g] + to_acc(bh[g * H + u]) : acc[g];
  }
  A* c = Cell::kCellState ? static_cast<A*>(p.c) + (d * B + b) * H + u : nullptr;
  const A cp = Cell::kCellState ? *c : A(0);
  // (h_{t-1} of unit u is an input of cells without a projection only, so u < P = H there)
  const auto r = Cell::forward(x, y, proj ? A(0) : to_acc(h_prev[u]), cp);
  if (Cell::kCellState) *c = r.c;
  if (sv) {
#pragma unroll
    for (int a = 0; a < Cell::kAct; ++a) put(sv + a * H + u, r.act[a]);
    if (Cell::kCellState) put(sv + L.c_prev + u, cp);
    if (proj) put(sv + L.m + u, r.out);
  }
  if (proj) {
    put(static_cast<S*>(p.m) + (d * B + b) * H + u, r.out);
  } else {
    put(o + u, r.out);
    if (hbuf) put(hbuf, r.out);
  }
}

// h_t = m W_hr^T for LSTM with a projection.
template <typename S>
__global__ void __launch_bounds__(kThreads) forward_projection(ForwardParams p, int64_t s) {
  using A = typename AccOf<S>::type;
  const int tx = threadIdx.x % kCols, ty = threadIdx.x / kCols;
  const int64_t d = blockIdx.z, b = blockIdx.y * kRows + ty, n = blockIdx.x * kCols + tx;
  const int64_t B = p.B, H = p.H, P = p.P;
  const RowStep rs = row_step(p.lengths, B, p.T, b, s, d == 1);
  __shared__ const S* rows[kRows];
  if (tx == 0) rows[ty] = rs.active ? static_cast<const S*>(p.m) + (d * B + b) * H : nullptr;
  if (!__syncthreads_or(rs.active)) return;
  A acc[1];
  tile_dot<1, true>(rows, H, static_cast<const S*>(p.w_hr) + d * P * H, H, P, blockIdx.x * kCols, acc);
  if (!rs.active || n >= P) return;
  put(static_cast<S*>(p.out) + (rs.t * B + b) * p.D * P + d * P + n, acc[0]);
  if (p.hbuf) put(static_cast<S*>(p.hbuf) + (d * B + place(p.slot, b)) * P + n, acc[0]);
}

// h_n: each row's output at its last step (t = L-1 forward, t = 0 reverse), h0 when L == 0.
template <typename S>
__global__ void forward_final(ForwardParams p) {
  const int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (i >= p.D * p.B * p.P) return;
  const int64_t k = i % p.P, b = (i / p.P) % p.B, d = i / (p.P * p.B);
  const int64_t L = clamp_length(p.lengths, b, p.T), t = d == 1 ? 0 : L - 1;
  S* h_n = static_cast<S*>(p.h_n);
  h_n[i] = L == 0 ? static_cast<const S*>(p.h0)[i]
                  : static_cast<const S*>(p.out)[(t * p.B + b) * p.D * p.P + d * p.P + k];
}

// dL/dh_t of row b at unit k but for grad_out. With the caller's products, backward_recurrent ran
// only for the last step (see backward): where the row ran step s + 1, that step's product
// dgh W_hh is added here (to the direct term that *dh holds for a cell with one; else *dh is
// stale).
template <typename Cell, typename A>
__device__ __forceinline__ A dh_at(const BackwardParams& p, const RowStep& rs, int64_t d, int64_t b, int64_t k) {
  const A dh = static_cast<const A*>(p.dh)[(d * p.B + b) * p.P + k];
  if (p.ghb == nullptr || !rs.later) return dh;
  const A gh = static_cast<const A*>(p.ghb)[(d * p.B + place(p.slot, b)) * p.P + k];
  return Cell::kDirect ? dh + gh : gh;
}

// dH[row] = grad_out[t, b] + dh (the gradient reaching h_t), kept per row for dW_hr.
template <typename S>
__global__ void __launch_bounds__(kThreads) backward_dh(BackwardParams p, int64_t s) {
  using A = typename AccOf<S>::type;
  const int tx = threadIdx.x % kCols, ty = threadIdx.x / kCols;
  const int64_t d = blockIdx.z, b = blockIdx.y * kRows + ty, k = blockIdx.x * kCols + tx;
  const RowStep rs = row_step(p.lengths, p.B, p.T, b, s, d == 1);
  if (!rs.active || k >= p.P) return;
  const int64_t row = rs.t * p.B + b;
  const A g = to_acc(static_cast<const S*>(p.grad_out)[row * p.D * p.P + d * p.P + k]);
  put(static_cast<S*>(p.dH) + token_row(p, d, row) * p.P + k, g + dh_at<LstmCell, A>(p, rs, d, b, k));  // LSTM only
}

// dm = dH[row] W_hr (projection only).
template <typename S>
__global__ void __launch_bounds__(kThreads) backward_projection(BackwardParams p, int64_t s) {
  using A = typename AccOf<S>::type;
  const int tx = threadIdx.x % kCols, ty = threadIdx.x / kCols;
  const int64_t d = blockIdx.z, b = blockIdx.y * kRows + ty, n = blockIdx.x * kCols + tx;
  const int64_t B = p.B, H = p.H, P = p.P;
  const RowStep rs = row_step(p.lengths, B, p.T, b, s, d == 1);
  __shared__ const S* rows[kRows];
  if (tx == 0) rows[ty] = rs.active ? static_cast<const S*>(p.dH) + token_row(p, d, rs.t * B + b) * P : nullptr;
  if (!__syncthreads_or(rs.active)) return;
  A acc[1];
  tile_dot<1, false>(rows, P, static_cast<const S*>(p.w_hr) + d * P * H, H, H, blockIdx.x * kCols, acc);
  if (rs.active && n < H) put(static_cast<S*>(p.dm) + (d * B + b) * H + n, acc[0]);
}

// The gate gradients of one step, per (row, unit).
template <typename S, typename Cell>
__global__ void __launch_bounds__(kThreads) backward_cell(BackwardParams p, int64_t s) {
  using A = typename AccOf<S>::type;
  constexpr int NG = Cell::kGates;
  const int tx = threadIdx.x % kCols, ty = threadIdx.x / kCols;
  const int64_t d = blockIdx.z, b = blockIdx.y * kRows + ty, u = blockIdx.x * kCols + tx;
  const int64_t B = p.B, H = p.H, P = p.P, G = NG * H;
  const RowStep rs = row_step(p.lengths, B, p.T, b, s, d == 1);
  if (!rs.active || u >= H) return;
  const bool proj = Cell::kProjection && p.proj;
  const SavedLayout L = SavedLayout::of<Cell>(H, P, proj);
  const int64_t row = rs.t * B + b;
  const S* sv = static_cast<const S*>(p.saved) + token_row(p, d, row) * p.K;
  S* dgx = static_cast<S*>(p.dgx) + token_row(p, d, row) * G;
  S* dgh = static_cast<S*>(p.dgh) + token_row(p, d, row) * G;
  S* dgb = p.dgbuf ? static_cast<S*>(p.dgbuf) + (d * B + place(p.slot, b)) * G + u : nullptr;  // dgh's, dense
  // dL/d(the cell's output): dL/dm with a projection, else dL/dh_t.
  const A dout = proj ? to_acc(static_cast<const S*>(p.dm)[(d * B + b) * H + u])
                      : to_acc(static_cast<const S*>(p.grad_out)[row * p.D * P + d * P + u]) +
                            dh_at<Cell, A>(p, rs, d, b, u);
  A act[Cell::kAct];
#pragma unroll
  for (int a = 0; a < Cell::kAct; ++a) act[a] = to_acc(sv[a * H + u]);
  A* dc = Cell::kCellState ? static_cast<A*>(p.dc) + (d * B + b) * H + u : nullptr;
  const auto g = Cell::backward(act, to_acc(sv[L.prev + u]), dout, Cell::kCellState ? *dc : A(0));
  if (Cell::kCellState) *dc = g.dc_prev;
#pragma unroll
  for (int k = 0; k < NG; ++k) {
    put(dgx + k * H + u, g.dx[k]);
    if (Cell::kBiasApart) put(dgh + k * H + u, g.dh[k]);
    if (dgb) put(dgb + k * H, g.dh[k]);
  }
  // The direct term; dgh W_hh joins it in backward_recurrent, or in the next step's dh_at.
  if (Cell::kDirect) static_cast<A*>(p.dh)[(d * B + b) * P + u] = g.direct;
}

// dh_{t-1} = dgh[row] W_hh, plus the direct term that backward_cell left for a cell with one.
template <typename S, typename Cell>
__global__ void __launch_bounds__(kThreads) backward_recurrent(BackwardParams p, int64_t s) {
  using A = typename AccOf<S>::type;
  constexpr int NG = Cell::kGates;
  const int tx = threadIdx.x % kCols, ty = threadIdx.x / kCols;
  const int64_t d = blockIdx.z, b = blockIdx.y * kRows + ty, n = blockIdx.x * kCols + tx;
  const int64_t B = p.B, P = p.P, G = NG * p.H;
  const RowStep rs = row_step(p.lengths, B, p.T, b, s, d == 1);
  __shared__ const S* rows[kRows];
  if (tx == 0) rows[ty] = rs.active ? static_cast<const S*>(p.dgh) + token_row(p, d, rs.t * B + b) * G : nullptr;
  if (!__syncthreads_or(rs.active)) return;
  A acc[1];
  if (p.ghb != nullptr) {
    acc[0] = rs.active && n < P ? static_cast<const A*>(p.ghb)[(d * B + place(p.slot, b)) * P + n] : A(0);
  } else {
    tile_dot<1, false>(rows, G, static_cast<const S*>(p.w_hh) + d * G * P, P, P, blockIdx.x * kCols, acc);
  }
  if (rs.active && n < P) {
    A* dh = static_cast<A*>(p.dh) + (d * B + b) * P + n;
    *dh = (Cell::kDirect ? *dh : A(0)) + acc[0];
  }
}

dim3 tiles(int64_t columns, int64_t B, int64_t D) {
  return dim3((unsigned)((columns + kCols - 1) / kCols), (unsigned)((B + kRows - 1) / kRows), (unsigned)D);
}

// Each returns the first launch's error, if any, having launched nothing after it.
template <typename S, typename Cell>
cudaError_t forward(const ForwardParams& p0, cudaStream_t stream, StepProducts products) {
  if (p0.B == 0) return cudaSuccess;
  ForwardParams p = p0;
  for (int64_t s = 0; s < p.T; ++s) {
    if (products.fn != nullptr && (p.gh = products.fn(products.ctx, s)) == nullptr) return cudaErrorUnknown;
    cudaError_t e = launch_grid(forward_step<S, Cell>, tiles(p.H, p.B, p.D), kThreads, stream, p, s);
    if (e == cudaSuccess && p.proj) {
      e = launch_grid(forward_projection<S>, tiles(p.P, p.B, p.D), kThreads, stream, p, s);
    }
    if (e != cudaSuccess) return e;
  }
  const int64_t n = p.D * p.B * p.P;
  return launch_grid(forward_final<S>, dim3((unsigned)((n + 255) / 256)), 256, stream, p);
}

template <typename S, typename Cell>
cudaError_t backward(const BackwardParams& p0, cudaStream_t stream, StepProducts products) {
  if (p0.B == 0) return cudaSuccess;
  BackwardParams p = p0;
  for (int64_t s = p.T - 1; s >= 0; --s) {
    cudaError_t e = cudaSuccess;
    if (p.proj) {
      e = launch_grid(backward_dh<S>, tiles(p.P, p.B, p.D), kThreads, stream, p, s);
      if (e == cudaSuccess) e = launch_grid(backward_projection<S>, tiles(p.H, p.B, p.D), kThreads, stream, p, s);
    }
    if (e == cudaSuccess) e = launch_grid(backward_cell<S, Cell>, tiles(p.H, p.B, p.D), kThreads, stream, p, s);
    if (e != cudaSuccess) return e;
    if (products.fn != nullptr && (p.ghb = products.fn(products.ctx, s)) == nullptr) return cudaErrorUnknown;
    // With the caller's products, step s - 1's first kernel adds this step's product (dh_at); the
    // last step's goes to dL/dh0 here.
    if (products.fn != nullptr && s > 0) continue;
    e = launch_grid(backward_recurrent<S, Cell>, tiles(p.P, p.B, p.D), kThreads, stream, p, s);
    if (e != cudaSuccess) return e;
  }
  return cudaSuccess;
}

}  // namespace

cudaError_t rnn_forward_cuda(const ForwardParams& p, DType dtype, cudaStream_t stream, StepProducts products) {
  PACKEDRNN_DISPATCH(forward, p, dtype, stream, products)
}

cudaError_t rnn_backward_cuda(const BackwardParams& p, DType dtype, cudaStream_t stream, StepProducts products) {
  PACKEDRNN_DISPATCH(backward, p, dtype, stream, products)
}

}  // namespace packedrnn
