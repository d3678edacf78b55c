// Persistent backward recurrence, staged form: the kernel and its launch, backward_dispatch<S, Cell>,
// instantiated one dtype per file (rnn_persistent_backward*.cu), so that each compiles in seconds.
// Design and shared pieces: persistent.cuh.
//
// Shapes (legend in cells.h): Ws [JT][ld] S, Ws[kk][j] = W_hh[j][u0 + kk], K = G; Xs [NC][ld] S: the
// gate gradients dgh of the chunk's rows at their next step; Y [JT][NC] float: dgh W_hh[:, units].
// Projection (LSTM, P < H): the units u < P of the block give dL/dh_t[u] (into dH [D][T*B][P] S,
// which the weight gradient of W_hr reads too); after a grid barrier, Wr [JT][ld] S,
// Wr[kk][k] = W_hr[k][u0 + kk], K = P, turns the staged dH rows into dL/dm of its units.
#pragma once

#include "persistent.cuh"

namespace packedrnn {
namespace persistent {

// What one (row, unit) pair needs besides the product, loaded before the chunk is staged.
template <typename A>
struct Item : Pair {
  A v[7];  // the cell's activations, prev, grad_out, dc or direct (load_cell)
};

template <typename S, typename Cell, int JT>
__global__ void __launch_bounds__(kThreads, 1) persistent_backward(BackwardParams p, Plan q) {
  using A = float;
  constexpr int NG = Cell::kGates;
  PACKEDRNN_SHARED_BYTES(smem_raw);
  cg::grid_group grid = cg::this_grid();
  const int64_t B = p.B, H = p.H, P = p.P, G = NG * H, DP = p.D * P;
  const Smem<S> sm(smem_raw, q, B);
  const Slice sl(p.D, q.Hb);
  const int64_t d = sl.d, u0 = sl.u0;
  const int Hb = q.Hb;
  const bool proj = Cell::kProjection && p.proj;
  const S* w = static_cast<const S*>(p.w_hh) + d * G * P;
  fill_weights(q.rec, sm.Ws, [&](int kk, int j) {
    return kk < Hb && u0 + kk < P && j < G ? w + j * P + u0 + kk : nullptr;
  });
  if (proj) {
    const S* wr = static_cast<const S*>(p.w_hr) + d * P * H;
    fill_weights(q.proj, sm.Wr, [&](int kk, int k) {
      return kk < Hb && u0 + kk < H && k < P ? wr + k * H + u0 + kk : nullptr;
    });
  }
  zero_padding(q.rec, q.NC, sm.Xs);
  Stage st(q.bulk, sm.bar);
  sort_rows(p.lengths, B, p.T, sm.order, sm.lens, sm.tmp);
  A* dh = static_cast<A*>(p.dh) + d * B * P;          // in: grad h_n; out: grad h0 (the block's units)
  const A* direct = static_cast<const A*>(p.direct) + d * B * H;  // the cell's direct term, per row
  // cp.async needs 16-byte rows; other sizes stage through registers.
  const bool vec = (G * sizeof(S)) % 16 == 0, vec_p = (P * sizeof(S)) % 16 == 0;
  S* dH = static_cast<S*>(p.dH);  // projection only
  const int64_t steps = sm.lens[0];
  // Projection, after the barrier that follows dH: dL/dm = dH W_hr for the block's units, then
  // their cells, for the n active rows of step s; a grid barrier, so the next step sees dgh.
  auto project_cells = [&](int64_t s, int n) {
    for (int r0 = 0; r0 < n; r0 += q.NC) {
      const int nc = min(q.NC, n - r0);
      const Chunk ch{r0, nc, Hb, u0, d, s, B, sm.order, sm.lens};
      Item<A> it[kItems];
#pragma unroll
      for (int k = 0; k < kItems; ++k) {
        static_cast<Pair&>(it[k]) = ch.pair(k, H);
        if (it[k].on) load_cell<S, Cell>(p, d, it[k], it[k].v);
      }
      zero_padding(q.proj, nc, sm.Xs);
      const int groups = stage_rows(st, q.proj, sm.Xs, nc, vec_p, [&](int r) {
        const int64_t t = d == 1 ? sm.lens[r0 + r] - 1 - s : s;
        return dH + token_row(p, d, t * B + sm.order[r0 + r]) * P;
      });
      __syncthreads();
      block_gemm<JT>(q.proj, q.NC, sm.Wr, sm.Xs, nc, groups, sm.red, sm.Y);
#pragma unroll
      for (int k = 0; k < kItems; ++k) {
        float gh[NG];
        if (it[k].on) cell_backward<S, Cell>(p, d, it[k], it[k].v, sm.Y[it[k].uu * q.NC + it[k].r], gh);
      }
      __syncthreads();  // Xs and Y are reused by the next chunk
    }
    grid.sync();
  };
  PhaseClock clock;
  // Step s = -1 is the extra pass that turns the gate gradients of step 0 into grad h0.
  for (int64_t s = steps - 1; s >= -1; --s) {
    const int n_here = active_after(sm.lens, (int)B, s);       // rows active at step s
    const int n_next = active_after(sm.lens, n_here, s + 1);   // of those, rows with a step s+1
    const int n = s >= 0 ? n_here : n_next;
    for (int r0 = 0; r0 < n; r0 += q.NC) {
      const int nc = min(q.NC, n - r0), np = max(0, min(nc, n_next - r0));  // np rows have a product
      // With a projection this pass gives dL/dh of the units u < P only; the cell comes later.
      const Chunk ch{r0, nc, Hb, u0, d, s, B, sm.order, sm.lens};
      Item<A> it[kItems];
#pragma unroll
      for (int k = 0; k < kItems; ++k) {
        Item<A>& m = it[k];
        static_cast<Pair&>(m) = ch.pair(k, P);
        if (!m.on) continue;
        if (Cell::kDirect) m.v[6] = direct[m.b * H + m.u];
        if (s < 0) continue;
        m.v[5] = to_acc(static_cast<const S*>(p.grad_out)[m.row * DP + d * P + m.u]);
        if (!proj) load_cell<S, Cell>(p, d, m, m.v);
      }
      // Stage the gate gradients of the rows' next step (written by every block before the last
      // grid barrier).
      if (proj) zero_padding(q.rec, np, sm.Xs);  // the dH rows were narrower
      const int groups = stage_rows(st, q.rec, sm.Xs, np, vec, [&](int r) {
        const int64_t t_next = d == 1 ? sm.lens[r0 + r] - 2 - s : s + 1;
        return static_cast<const S*>(p.dgh) + token_row(p, d, t_next * B + sm.order[r0 + r]) * G;
      });
      __syncthreads();
      clock.mark(0);
      block_gemm<JT>(q.rec, q.NC, sm.Ws, sm.Xs, np, groups, sm.red, sm.Y);
      clock.mark(1);
#pragma unroll
      for (int k = 0; k < kItems; ++k) {
        const Item<A>& m = it[k];
        if (!m.on) continue;
        const int64_t u = m.u;
        // dL/dh_t from the step after (rows that have one), else grad h_n.
        const A carry = m.r < np ? sm.Y[m.uu * q.NC + m.r] + (Cell::kDirect ? m.v[6] : A(0)) : dh[m.b * P + u];
        if (s < 0) {  // the extra pass: the carry is grad h0
          dh[m.b * P + u] = carry;
          continue;
        }
        const A dht = m.v[5] + carry;
        if (proj) {
          put(dH + token_row(p, d, m.row) * P + u, dht);
          continue;
        }
        float gh[NG];
        cell_backward<S, Cell>(p, d, m, m.v, dht, gh);
      }
      __syncthreads();  // Xs and Y are reused by the next chunk
      clock.mark(2);
    }
    if (s >= 0) grid.sync();
    if (proj && s >= 0) project_cells(s, n_here);
    clock.mark(3);
  }
  clock.report("backward (staged)", steps + 1);
}

template <typename S, typename Cell>
cudaError_t backward_dispatch(const BackwardParams& p, cudaStream_t stream) {
  if constexpr (sizeof(S) == 8 || !persistent_takes<Cell>()) {
    return cudaErrorNotSupported;  // fp64: the per-step kernels
  } else {
    constexpr int NG = Cell::kGates;
    if (Cell::kDirect && p.direct == nullptr) return cudaErrorNotSupported;
    const Plan q = plan_for<S>(p, 1, NG * p.H, Cell::kProjection && p.proj ? p.P : 0);
    return with_width<1, 2, 4, 8, 16>(q.Hb ? q.rec.JT : 0, [&](auto jt) {
      constexpr int J = decltype(jt)::value;
      return cooperative(persistent_backward<S, Cell, J>, p, q, stream);
    });
  }
}

// Instantiated in rnn_persistent_backward_fp32_gru.cu, _bf16.cu and _fp16.cu (so that no file
// takes nvcc much over 10 s).
extern template cudaError_t backward_dispatch<float, GruCell>(const BackwardParams&, cudaStream_t);
extern template cudaError_t backward_dispatch<__nv_bfloat16, GruCell>(const BackwardParams&, cudaStream_t);
extern template cudaError_t backward_dispatch<__nv_bfloat16, LstmCell>(const BackwardParams&, cudaStream_t);
extern template cudaError_t backward_dispatch<__half, GruCell>(const BackwardParams&, cudaStream_t);
extern template cudaError_t backward_dispatch<__half, LstmCell>(const BackwardParams&, cudaStream_t);

}  // namespace persistent
}  // namespace packedrnn
