// The LSTM cell (nn.LSTM): gates i, f, g, o (G = 4H, in nn.LSTM's order), a cell state c beside
// h, and an optional projection h = m W_hr^T (proj_size) that the engines apply after the cell.
#pragma once

#include "scalar.h"

namespace packedrnn {

struct LstmCell {
  static constexpr int64_t kCode = 0;   // the ops' `cell` (packedrnn/cells.py)
  static constexpr int kGates = 4;
  static constexpr int kAct = 4;        // values per unit the forward saves: i, f, g, o after their nonlinearity
  static constexpr bool kCellState = true;   // carries c; the backward reads the saved c_{t-1}
  static constexpr bool kProjection = true;  // may have proj_size
  static constexpr bool kBiasApart = false;  // b_hh folds into the input projection
  static constexpr bool kDirect = false;     // dL/dh_{t-1} only through W_hh

  // x[g]: the input projection with both biases; h[g]: h_{t-1} W_hh^T. c_prev in, c out; `out` is
  // m = o * tanh(c): the new h, or the projection's input.
  template <typename T>
  static PRNN_HD CellStep<T, kAct> forward(const T (&x)[kGates], const T (&h)[kGates], T /*h_prev*/, T c_prev) {
    CellStep<T, kAct> r;
    const T i = sigmoid_(x[0] + h[0]), f = sigmoid_(x[1] + h[1]), g = tanh_(x[2] + h[2]), o = sigmoid_(x[3] + h[3]);
    r.act[0] = i, r.act[1] = f, r.act[2] = g, r.act[3] = o;
    r.c = f * c_prev + i * g;
    r.out = o * tanh_(r.c);
    return r;
  }

  // From the saved activations and c_prev (`prev`), dout = dL/dm and dc = dL/dc from the next step:
  // dL/d(pre-activation) of each gate (the same for both projections: dx only) and dL/dc_prev.
  template <typename T>
  static PRNN_HD CellGrad<T, kGates> backward(const T (&act)[kAct], T prev, T dout, T dc_next) {
    const T i = act[0], f = act[1], g = act[2], o = act[3];
    const T c = f * prev + i * g;
    const T tc = tanh_(c);
    const T dc = dc_next + dout * o * (T(1) - tc * tc);
    CellGrad<T, kGates> r;
    r.dx[0] = dc * g * i * (T(1) - i);
    r.dx[1] = dc * prev * f * (T(1) - f);
    r.dx[2] = dc * i * (T(1) - g * g);
    r.dx[3] = dout * tc * o * (T(1) - o);
    for (int k = 0; k < kGates; ++k) r.dh[k] = r.dx[k];
    r.dc_prev = dc * f;
    r.direct = T(0);
    return r;
  }
};

}  // namespace packedrnn
