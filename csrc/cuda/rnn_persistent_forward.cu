// Persistent forward recurrence: the kernel and its launch. Design and shared pieces: persistent.cuh.
#include "persistent.cuh"

namespace packedrnn {
namespace persistent {
namespace {

// R: rows per warp pass (two_rows in persistent.cuh).
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

template <typename S, int NG>
cudaError_t forward_dispatch(const ForwardParams& p, cudaStream_t stream) {
  if constexpr (sizeof(S) == 8) {
    return cudaErrorNotSupported;  // fp64 is for checking, not speed: the per-step kernels serve it
  } else {
    const Layout g = layout_for(p);
    const int JT = pow2_at_least(NG * g.Hb);  // gate rows of the block's units, padded
    return with_width<4, 8, 16, 32>(JT, [&](auto jt) {
      constexpr int J = decltype(jt)::value;
      return launch(persistent_forward<S, NG, J, 1>, persistent_forward<S, NG, J, 2>, p, g,
                    (size_t)J * p.P * sizeof(S), stream);
    });
  }
}

}  // namespace
}  // namespace persistent

cudaError_t rnn_forward_persistent(const ForwardParams& p, DType dtype, cudaStream_t stream) {
  PACKEDRNN_DISPATCH(persistent::forward_dispatch, p, dtype, stream)
}

}  // namespace packedrnn
