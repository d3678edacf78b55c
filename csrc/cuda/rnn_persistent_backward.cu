// Persistent backward recurrence: the kernel and its launch. Design and shared pieces: persistent.cuh.
#include "persistent.cuh"

namespace packedrnn {
namespace persistent {
namespace {

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

template <typename S, int NG>
cudaError_t backward_dispatch(const BackwardParams& p, cudaStream_t stream) {
  if constexpr (sizeof(S) == 8) {
    return cudaErrorNotSupported;  // fp64: the per-step kernels
  } else {
    if (NG == 3 && p.direct == nullptr) return cudaErrorNotSupported;
    const Layout g = layout_for(p);
    return with_width<1, 2, 4, 8>(g.Hb, [&](auto hb) {  // one column per unit of the block
      constexpr int J = decltype(hb)::value;
      return launch(persistent_backward<S, NG, J, 1>, persistent_backward<S, NG, J, 2>, p, g,
                    (size_t)J * NG * p.H * sizeof(S), stream);
    });
  }
}

}  // namespace
}  // namespace persistent

cudaError_t rnn_backward_persistent(const BackwardParams& p, DType dtype, cudaStream_t stream) {
  PACKEDRNN_DISPATCH(persistent::backward_dispatch, p, dtype, stream)
}

}  // namespace packedrnn
