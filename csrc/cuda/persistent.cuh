// Persistent CUDA recurrence: the design, and the backward's cell shared by both backward forms;
// included by persistent_forward.cuh, persistent_backward.cuh and rnn_persistent_backward_reduce.cu
// (instantiated one dtype per .cu file, so that each compiles in seconds). Its parts, one concern
// each, are the four headers included below. One cooperative launch runs every step of a layer,
// both directions; fp32, bf16 and fp16 (fp64 takes the per-step kernels). Framework-free;
// interface in rnn_cuda.h, gate math in cells/, shape legend in cells.h; the rules that pick an
// exchange, a backward form and the staging in rules.h.
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

#include "persistent_layout.cuh"    // sizes, the plan, shared memory, rows and pairs
#include "persistent_plan.cuh"      // the host side: sizing and the cooperative launch
#include "persistent_products.cuh"  // block_gemm: FFMA and tensor-core products
#include "persistent_stage.cuh"     // filling shared memory: weights, staged rows

namespace packedrnn {
namespace persistent {

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

// The backward's reduce form (rnn_persistent_backward_reduce.cu); cudaErrorNotSupported where it
// is not asked for or does not fit.
cudaError_t backward_reduce(const BackwardParams& p, DType dtype, cudaStream_t stream);

}  // namespace persistent
}  // namespace packedrnn
