// Persistent forward recurrence: the kernel and its launch, forward_dispatch<S, Cell>, instantiated
// one dtype per file (rnn_persistent_forward*.cu), so that each compiles in seconds. Design and
// shared pieces: persistent.cuh.
//
// Shapes (legend in cells.h): Ws [JT][ld] S, rows j = g*Hb + uu (gate g of unit u0 + uu), K = P;
// Xs [NC][ld] S: h_{t-1} of the chunk's rows; Y [JT][NC] float: their gate products;
// xch [2][D][B][P] 64-bit {h_t as float, tag t+1}: the exchange between blocks (zeroed by the caller).
// Projection (LSTM, P < H): Wr [JT/4][ld] S, row uu = W_hr[u0 + uu], K = H; Xs then holds m_t of
// the chunk's rows, from the scratch m [D][B][H] S, and Y their outputs h_t.
#pragma once

#include "persistent.cuh"

namespace packedrnn {
namespace persistent {

// What one (row, unit) pair of a chunk needs besides h_{t-1} W_hh^T, loaded before the wait for
// h_{t-1} so that its latency hides behind it.
template <typename A>
struct Item : Pair {
  A gx[4], c = A(0);
};

// h_t = m_t W_hr^T for the n active rows of step s, after a grid barrier that makes every
// block's m_t visible; the block's units u < P produce outputs u. Ends past a __syncthreads.
template <typename S, int JT>
__device__ void project(const ForwardParams& p, const Plan& q, const Smem<S>& sm, Stage& st, int64_t d, int64_t u0,
                        int64_t s, int n, const S* m_all, bool vec_m, cg::grid_group& grid) {
  const int64_t B = p.B, P = p.P, DP = p.D * P;
  grid.sync();
  for (int r0 = 0; r0 < n; r0 += q.NC) {
    const int nc = min(q.NC, n - r0);
    zero_padding(q.proj, nc, sm.Xs);
    const int groups =
        stage_rows(st, q.proj, sm.Xs, nc, vec_m, [&](int r) { return m_all + sm.order[r0 + r] * p.H; });
    __syncthreads();
    block_gemm<JT>(q.proj, q.NC, sm.Wr, sm.Xs, nc, groups, sm.red, sm.Y);
    const Chunk ch{r0, nc, q.Hb, u0, d, s, B, sm.order, sm.lens};
#pragma unroll
    for (int k = 0; k < kItems; ++k) {
      const Pair m = ch.pair(k, P);
      if (!m.on) continue;
      S h;
      put(&h, sm.Y[m.uu * q.NC + m.r]);
      static_cast<S*>(p.out)[m.row * DP + d * P + m.u] = h;
      if (s + 1 == m.len) static_cast<S*>(p.h_n)[(d * B + m.b) * P + m.u] = h;
    }
    __syncthreads();  // Xs and Y are reused by the next chunk
  }
}

template <typename S, typename Cell, int JT>
__global__ void __launch_bounds__(kThreads, 1) persistent_forward(ForwardParams p, Plan q) {
  using A = float;
  constexpr int NG = Cell::kGates;
  constexpr bool with_c = Cell::kCellState;
  PACKEDRNN_SHARED_BYTES(smem_raw);
  const int64_t B = p.B, H = p.H, P = p.P, G = NG * H, DP = p.D * P;
  const Smem<S> sm(smem_raw, q, B);
  const Slice sl(p.D, q.Hb);
  const int64_t d = sl.d, u0 = sl.u0;
  const int Hb = q.Hb;
  const bool proj = Cell::kProjection && p.proj;
  const SavedLayout L = SavedLayout::of<Cell>(H, P, proj);
  fill_gate_rows<S, NG>(q.rec, sm.Ws, p, d, Hb, u0);
  if (proj) {
    const S* wr = static_cast<const S*>(p.w_hr) + d * P * H;
    fill_weights(q.proj, sm.Wr, [&](int uu, int k) {
      return uu < Hb && u0 + uu < P && k < H ? wr + (u0 + uu) * H + k : nullptr;
    });
  }
  zero_padding(q.rec, q.NC, sm.Xs);
  Stage st(q.bulk, sm.bar);
  sort_rows(p.lengths, B, p.T, sm.order, sm.lens, sm.tmp);  // ends with __syncthreads
  const S* h0 = static_cast<const S*>(p.h0) + d * B * P;
  S* h_n = static_cast<S*>(p.h_n) + d * B * P;
  for (int64_t i = threadIdx.x; i < B * Hb; i += kThreads) {  // rows of length 0: h_n = h0
    const int64_t b = i / Hb, u = u0 + i % Hb;
    if (u < P && clamp_length(p.lengths, b, p.T) == 0) h_n[b * P + u] = h0[b * P + u];
  }
  S* m_all = proj ? static_cast<S*>(p.m) + d * B * H : nullptr;  // m_t by row b
  unsigned long long* xch = static_cast<unsigned long long*>(p.xch) + d * B * P;
  const int64_t slot = p.D * B * P;  // distance between the two exchange slots
  const int64_t steps = sm.lens[0];
  const S* out_c = static_cast<const S*>(p.out);
  const bool vec = (P * sizeof(S)) % 16 == 0;  // rows of h0 and out are 16-byte aligned
  const bool vec_m = (H * sizeof(S)) % 16 == 0;  // and rows of m
  // A cell state (LSTM's c) stays in registers while every step is one chunk (pair k of a thread
  // is then the same (rank, unit) at every step, and the ranks active at a step were active at the
  // one before); else it goes through `c` [D][B][H], which holds c0 on entry and each row's c_n on exit.
  const bool c_in_regs = with_c && B <= q.NC;
  A c_reg[kItems];
  cg::grid_group grid = cg::this_grid();
  PhaseClock clock;
  int n = (int)B;
  for (int64_t s = 0; s < steps; ++s) {
    n = active_after(sm.lens, n, s);
    const unsigned long long* xin = xch + ((s + 1) & 1) * slot;  // written at step s-1, tag s
    unsigned long long* xout = xch + (s & 1) * slot;
    for (int r0 = 0; r0 < n; r0 += q.NC) {
      const int nc = min(q.NC, n - r0);
      const Chunk ch{r0, nc, Hb, u0, d, s, B, sm.order, sm.lens};
      Item<A> it[kItems];
#pragma unroll
      for (int k = 0; k < kItems; ++k) {
        Item<A>& m = it[k];
        static_cast<Pair&>(m) = ch.pair(k, H);
        if (!m.on) continue;
        const int64_t u = m.u;
        const S* gx = static_cast<const S*>(p.gx) + token_row(p, d, m.row) * G + u;
#pragma unroll
        for (int g = 0; g < NG; ++g) m.gx[g] = to_acc(gx[g * H]);
        if (with_c) m.c = c_in_regs && s > 0 ? c_reg[k] : static_cast<const A*>(p.c)[(d * B + m.b) * H + u];
      }
      // Stage h_{t-1} of the chunk's rows: h0 at the first step; then the previous step's output
      // (barrier) or the tagged words of step s-1.
      if (proj) zero_padding(q.rec, nc, sm.Xs);  // the projection's m rows were wider
      int groups = 0;
      if (s == 0 || q.barrier) {
        groups = stage_rows(st, q.rec, sm.Xs, nc, vec, [&](int r) {
          const int64_t b = sm.order[r0 + r], t_prev = d == 1 ? sm.lens[r0 + r] - s : s - 1;
          return s == 0 ? h0 + b * P : out_c + (t_prev * B + b) * DP + d * P;
        });
      } else {  // wait for tag s, asking again for all late words at once
        constexpr int U = 16;  // loads in flight per thread
        const int total = nc * q.rec.K;
        for (int e0 = threadIdx.x; e0 < total; e0 += U * kThreads) {
          unsigned long long v[U];
          const unsigned long long* src[U];
          unsigned pending = 0;
#pragma unroll
          for (int k = 0; k < U; ++k) {
            const int e = e0 + k * kThreads, r = e / q.rec.K, kk = e % q.rec.K;
            src[k] = xin + (int64_t)sm.order[r0 + (e < total ? r : 0)] * P + kk;
            if (e < total) v[k] = load_relaxed(src[k]), pending |= 1u << k;
          }
          while (true) {
#pragma unroll
            for (int k = 0; k < U; ++k) {
              if (((pending >> k) & 1) && (v[k] >> 32) == (unsigned long long)s) {
                const int e = e0 + k * kThreads;
                put(sm.Xs + (e / q.rec.K) * q.rec.ld + e % q.rec.K, __uint_as_float((unsigned)v[k]));  // exact
                pending &= ~(1u << k);
              }
            }
            if (pending == 0) break;
#pragma unroll
            for (int k = 0; k < U; ++k) {
              if ((pending >> k) & 1) v[k] = load_relaxed(src[k]);
            }
          }
        }
      }
      __syncthreads();
      clock.mark(0);
      block_gemm<JT>(q.rec, q.NC, sm.Ws, sm.Xs, nc, groups, sm.red, sm.Y);
      clock.mark(1);
#pragma unroll
      for (int k = 0; k < kItems; ++k) {
        const Item<A>& m = it[k];
        if (!m.on) continue;
        const int64_t u = m.u;
        const float* yb = sm.Y + m.uu * q.NC + m.r;  // gate g at yb[g * Hb * NC]
        const int64_t gs = (int64_t)Hb * q.NC;
        const A hp = u < P ? to_acc(sm.Xs[(int64_t)m.r * q.rec.ld + u]) : A(0);
        S* sv = p.saved ? static_cast<S*>(p.saved) + token_row(p, d, m.row) * p.K : nullptr;
        if (sv && u < P) put(sv + L.h_prev + u, hp);
        A x[NG], y[NG];  // the cell's input and recurrent projections (y with b_hh where kept apart)
        const S* bh = Cell::kBiasApart && p.b_hh ? static_cast<const S*>(p.b_hh) + d * G : nullptr;
#pragma unroll
        for (int g = 0; g < NG; ++g) {
          x[g] = m.gx[g];
          y[g] = bh ? yb[g * gs] + to_acc(bh[g * H + u]) : yb[g * gs];
        }
        const auto o = Cell::forward(x, y, hp, m.c);
        if (with_c) {
          c_reg[k] = o.c;
          if (!c_in_regs || s + 1 == m.len) static_cast<A*>(p.c)[(d * B + m.b) * H + u] = o.c;
        }
        if (sv) {
#pragma unroll
          for (int a = 0; a < Cell::kAct; ++a) put(sv + a * H + u, o.act[a]);
          if (with_c) put(sv + L.c_prev + u, m.c);
          if (proj) put(sv + L.m + u, o.out);
        }
        if (proj) {  // h_t comes from the projection below
          put(m_all + m.b * H + u, o.out);
          continue;
        }
        const A h = o.out;
        S hs;
        put(&hs, h);
        static_cast<S*>(p.out)[m.row * DP + d * P + u] = hs;
        if (s + 1 < m.len && !q.barrier) {
          store_relaxed(xout + m.b * P + u, tagged(to_acc(hs), s + 1));
        } else if (s + 1 == m.len) {
          h_n[m.b * P + u] = hs;
        }
      }
      __syncthreads();  // Xs and Y are reused by the next chunk
      clock.mark(2);
    }
    if constexpr (Cell::kProjection) {
      if (proj) project<S, JT / NG>(p, q, sm, st, d, u0, s, n, m_all, vec_m, grid);
    }
    if (q.barrier) grid.sync();
    clock.mark(3);
  }
  clock.report(q.barrier ? "forward (barrier)" : "forward (tagged)", steps);
}

template <typename S, typename Cell>
cudaError_t forward_dispatch(const ForwardParams& p, cudaStream_t stream) {
  if constexpr (sizeof(S) == 8 || !persistent_takes<Cell>()) {
    return cudaErrorNotSupported;  // fp64 is for checking, not speed: the per-step kernels serve it
  } else {
    constexpr int NG = Cell::kGates;
    const bool proj = Cell::kProjection && p.proj;
    Plan q = plan_for<S>(p, NG, p.P, proj ? p.H : 0);
    q.barrier = choose_barrier(p.tuning, proj, p.B, p.P);
    if (!q.barrier && p.xch == nullptr) return cudaErrorNotSupported;
    // 64 gate rows (16 units per block) only on tensor cores: block_gemm_ffma takes at most 32, so
    // an fp32 forward that needs 16 units per block runs the per-step kernels.
    auto launch = [&](auto jt) {
      constexpr int J = decltype(jt)::value;
      return cooperative(persistent_forward<S, Cell, J>, p, q, stream);
    };
    if constexpr (std::is_same<S, float>::value) {
      return with_width<4, 8, 16, 32>(q.Hb ? q.rec.JT : 0, launch);
    } else {
      return with_width<4, 8, 16, 32, 64>(q.Hb ? q.rec.JT : 0, launch);
    }
  }
}

// Instantiated in rnn_persistent_forward_bf16.cu and _fp16.cu.
extern template cudaError_t forward_dispatch<__nv_bfloat16, GruCell>(const ForwardParams&, cudaStream_t);
extern template cudaError_t forward_dispatch<__nv_bfloat16, LstmCell>(const ForwardParams&, cudaStream_t);
extern template cudaError_t forward_dispatch<__half, GruCell>(const ForwardParams&, cudaStream_t);
extern template cudaError_t forward_dispatch<__half, LstmCell>(const ForwardParams&, cudaStream_t);

}  // namespace persistent
}  // namespace packedrnn
