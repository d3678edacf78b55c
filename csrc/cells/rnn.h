// The Elman cell (nn.RNN): one gate, h_t = act(x W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh), with
// act = tanh (RNN_TANH) or relu (RNN_RELU).
#pragma once

#include "scalar.h"

namespace packedrnn {

struct Tanh {
  static constexpr int64_t kCode = 2;
  template <typename T> static PRNN_HD T f(T v) { return tanh_(v); }
  template <typename T> static PRNN_HD T df(T out) { return T(1) - out * out; }  // from f's value
};
struct Relu {
  static constexpr int64_t kCode = 3;
  // NaN propagates, as torch.relu's does; the derivative at 0 is 0, as autograd's.
  template <typename T> static PRNN_HD T f(T v) { return v > T(0) || v != v ? v : T(0); }
  template <typename T> static PRNN_HD T df(T out) { return out > T(0) ? T(1) : T(0); }
};

template <typename Act>
struct ElmanCell {
  static constexpr int64_t kCode = Act::kCode;
  static constexpr int kGates = 1;
  static constexpr int kAct = 1;             // h_t itself: the derivative is a function of it
  static constexpr bool kCellState = false;
  static constexpr bool kProjection = false;
  static constexpr bool kBiasApart = false;  // b_hh folds into the input projection
  static constexpr bool kDirect = false;

  template <typename T>
  static PRNN_HD CellStep<T, kAct> forward(const T (&x)[kGates], const T (&h)[kGates], T /*h_prev*/, T /*c_prev*/) {
    CellStep<T, kAct> s;
    s.out = Act::f(x[0] + h[0]);
    s.act[0] = s.out;
    s.c = T(0);
    return s;
  }

  template <typename T>
  static PRNN_HD CellGrad<T, kGates> backward(const T (&act)[kAct], T /*prev*/, T dout, T /*dc_next*/) {
    CellGrad<T, kGates> g;
    g.dx[0] = g.dh[0] = dout * Act::df(act[0]);
    g.dc_prev = g.direct = T(0);
    return g;
  }
};
using RnnTanhCell = ElmanCell<Tanh>;
using RnnReluCell = ElmanCell<Relu>;

}  // namespace packedrnn
