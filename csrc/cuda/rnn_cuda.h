// Framework-free interface of the CUDA recurrence kernels (rnn_kernels.cu): plain pointers, sizes
// and a stream. The torch glue is rnn_cuda_launch.cpp.
//
// Shape legend (cells.h): T steps, B rows, D directions, H units, P state size, G gate rows,
// K width of a saved row (SavedLayout). "Row" r = t*B + b indexes the [D, T*B, *] buffers; with
// `token` set, the buffers of R rows take valid positions only (token_row in dtypes.cuh).
// Pointer conventions: S* is the tensor dtype (float, double, __half, __nv_bfloat16 behind void*),
// A* is the accumulation dtype (double for double, float otherwise).
//
// The recurrence runs T launches (one per step; steps past a row's length exit early on the
// device, so the host never learns max(lengths): no host sync). h_{t-1} is read back from `out`
// (the previous step's output of that row) or h0, so rows that are done need no copying.
#pragma once

#include <cuda_runtime.h>
#include <stdint.h>

#include "rules.h"

namespace packedrnn {

enum class DType : int { f32 = 0, f64 = 1, f16 = 2, bf16 = 3 };

struct ForwardParams {
  int64_t cell, T, B, D, H, P, K;
  bool proj;
  const int64_t* lengths;  // [B], device
  const void* gx;          // [D, R, G]    S  x W_ih^T + b_ih (+ b_hh unless kept apart) (R: `token` below)
  const void* h0;          // [D, B, P]    S
  const void* w_hh;        // [D, G, P]    S
  const void* b_hh;        // [D, G]       S  cells that keep it apart (GRU); may be null
  const void* w_hr;        // [D, P, H]    S  or null
  void* c;                 // [D, B, H]    A  in: c0, out: c_n (cells with a cell state; else null)
  void* m;                 // [D, B, H]    S  scratch for m = o*tanh(c) (projection only)
  void* out;               // [T, B, D*P]  S  zeroed by the caller; written at valid steps
  void* h_n;               // [D, B, P]    S
  void* saved;             // [D, R, K]    S  or null (no backward); R = T*B zeroed by the caller
  void* xch;               // [2, D, B, P] 64-bit words, zeroed: the persistent kernel's exchange
                           //              of h between blocks (persistent.cuh), or null
  // Per-step kernels with the caller's products (StepProducts below), else null:
  void* hbuf = nullptr;    // [D, B, P]    S  every row's latest h (in: h0), the products' input
  const void* gh = nullptr;  // [D, B, G]  A  hbuf W_hh^T of the step (set per step)
  const int64_t* slot = nullptr;  // [B]   row b's place in hbuf/gh, or null: b (see StepProducts)
  // The rows of gx and saved (token_row in dtypes.cuh): as BackwardParams' below.
  const int64_t* token = nullptr;  // [T*B]
  int64_t tokens = 0;
  Tuning tuning{};  // the caller's forced choices (rules.h)
};

struct BackwardParams {
  int64_t cell, T, B, D, H, P, K;
  bool proj;
  const int64_t* lengths;  // [B]
  const void* w_hh;        // [D, G, P]    S
  const void* w_hr;        // [D, P, H]    S  or null
  const void* saved;       // [D, R, K]    S  (R: `token` below)
  const void* grad_out;    // [T, B, D*P]  S
  void* dh;                // [D, B, P]    A  in: grad h_n, out: grad h0
  void* dc;                // [D, B, H]    A  in: grad c_n, out: grad c0 (cells with a cell state; else null)
  void* dm;                // [D, B, H]    S  scratch, dL/dm (projection only)
  void* dgx;               // [D, R, G]    S  dL/d(x projection) at valid rows (R: `token` below)
  void* dgh;               // [D, R, G]    S  dL/d(h projection); == dgx unless the cell keeps b_hh apart
  void* dH;                // [D, R, P]    S  dL/dh per row (projection only, else null)
  void* direct;            // [D, B, H]    A  scratch for the direct term of a cell with one (GRU), or null
  void* part = nullptr;    // float scratch of rnn_backward_persistent_partials() values, or null
  // Per-step kernels with the caller's products (StepProducts below), else null:
  void* dgbuf = nullptr;   // [D, B, G]    S  zeroed; every row's latest gate gradients (dgh's)
  const void* ghb = nullptr;  // [D, B, P] A  dgbuf W_hh of the step (set per step)
  const int64_t* slot = nullptr;  // [B]   row b's place in dgbuf/ghb, or null: b
  // The rows of saved, dgx, dgh and dH (token_row in dtypes.cuh). token null: every position, row
  // t*B + b of R = T*B, zeroed by the caller (padded rows stay zero). Else only the valid
  // positions, row token[t*B + b] of R = `tokens`, the layout in which the products around the
  // recurrence take them (the caller knew the lengths on the host), every row written here.
  const int64_t* token = nullptr;  // [T*B]  device; padded positions are never read
  int64_t tokens = 0;
  Tuning tuning{};  // the caller's forced choices (rules.h)
};

// The recurrent products of the per-step kernels from the caller (the torch glue: cuBLAS, for
// large one-direction fp32 layers, or recurrence "gemm") instead of their own tile
// products. fn(ctx, s) enqueues step s's product on the stream and returns its device pointer:
// forward, called before the step's kernels, hbuf W_hh^T (p.gh); backward, called after the
// step's gate gradients, dgbuf W_hh (p.ghb). Row b sits at place slot[b] of those buffers: when the caller knows the
// lengths on the host it puts rows longest first, so the rows active at a step are a prefix and
// the product can stop there; rows past it, or not active, have results nobody reads.
struct StepProducts {
  const void* (*fn)(void* ctx, int64_t s) = nullptr;
  void* ctx = nullptr;
};

// Per-step kernels (rnn_kernels.cu): every case. Both return the first CUDA error of their launches
// (cudaErrorUnknown if products.fn returns null).
cudaError_t rnn_forward_cuda(const ForwardParams& p, DType dtype, cudaStream_t stream, StepProducts products = {});
cudaError_t rnn_backward_cuda(const BackwardParams& p, DType dtype, cudaStream_t stream, StepProducts products = {});

// Persistent kernels (persistent_forward.cuh, persistent_backward.cuh, persistent.cuh): one
// cooperative launch for all steps, W_hh (and W_hr) on chip. Return cudaErrorNotSupported, having
// launched nothing, when the call does not fit: fp64, more than 16 units per block
// (H > 16 * SMs / D; 8 for an fp32 forward), shared memory, or co-residency. Forward writes out,
// h_n, c (c_n) and saved like rnn_forward_cuda, and needs `xch` unless it has a projection (which
// uses `m`); backward needs `direct` for a cell with a direct term and `dH` for a projection (not `dm`).
cudaError_t rnn_forward_persistent(const ForwardParams& p, DType dtype, cudaStream_t stream);
cudaError_t rnn_backward_persistent(const BackwardParams& p, DType dtype, cudaStream_t stream);
// The floats of `part` that the backward needs: nonzero only where it runs its reduce form
// (rnn_persistent_backward_reduce.cu). The caller allocates them.
int64_t rnn_backward_persistent_partials(const BackwardParams& p, DType dtype);

}  // namespace packedrnn
