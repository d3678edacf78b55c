// The GRU cell (nn.GRU): gates r, z, n (G = 3H, in nn.GRU's order). b_hh stays apart from the input
// projection, because the n gate multiplies r into W_hn h + b_hn.
#pragma once

#include "scalar.h"

namespace packedrnn {

struct GruCell {
  static constexpr int64_t kCode = 1;
  static constexpr int kGates = 3;
  static constexpr int kAct = 4;             // r, z, n and hn = W_hn h + b_hn
  static constexpr bool kCellState = false;  // the backward reads the saved h_{t-1}
  static constexpr bool kProjection = false;
  static constexpr bool kBiasApart = true;   // h[g] below includes b_hh
  static constexpr bool kDirect = true;      // h_t = ... + z * h_{t-1}: a term besides W_hh

  // x[g] = x W_ih^T + b_ih, h[g] = h_{t-1} W_hh^T + b_hh.
  template <typename T>
  static PRNN_HD CellStep<T, kAct> forward(const T (&x)[kGates], const T (&h)[kGates], T h_prev, T /*c_prev*/) {
    CellStep<T, kAct> s;
    const T r = sigmoid_(x[0] + h[0]), z = sigmoid_(x[1] + h[1]), n = tanh_(x[2] + r * h[2]);
    s.act[0] = r, s.act[1] = z, s.act[2] = n, s.act[3] = h[2];
    s.c = T(0);
    s.out = (T(1) - z) * n + z * h_prev;
    return s;
  }

  // prev = h_{t-1}, dout = dL/dh_t. dx = dL/d(x projection) (r, z, n); dh = dL/d(h projection)
  // (r, z, hn); direct = dh * z, the part of dL/dh_{t-1} that does not pass through W_hh.
  template <typename T>
  static PRNN_HD CellGrad<T, kGates> backward(const T (&act)[kAct], T prev, T dout, T /*dc_next*/) {
    const T r = act[0], z = act[1], n = act[2], hn = act[3];
    CellGrad<T, kGates> g;
    g.dx[2] = dout * (T(1) - z) * (T(1) - n * n);
    g.dx[1] = dout * (prev - n) * z * (T(1) - z);
    g.dx[0] = g.dx[2] * hn * r * (T(1) - r);
    g.dh[0] = g.dx[0], g.dh[1] = g.dx[1], g.dh[2] = g.dx[2] * r;
    g.dc_prev = T(0);
    g.direct = dout * z;
    return g;
  }
};

}  // namespace packedrnn
