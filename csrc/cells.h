// Gate math of the LSTM and GRU cells, forward and backward, written once for the CPU and CUDA
// kernels. Framework-free: plain scalars in and out, `acc_t` is float or double (half types
// accumulate in float).
//
// Shape legend used across csrc/:
//   T  padded steps   B  batch rows   I  input features   D  directions (1 or 2)
//   H  hidden units   P  recurrent state size (proj_size if > 0, else H)
//   G  gate rows: 4H for LSTM (i, f, g, o), 3H for GRU (r, z, n), as nn.LSTM / nn.GRU order them
#pragma once

#include <math.h>
#include <stdint.h>

#if defined(__CUDACC__)
#define PRNN_HD __host__ __device__ __forceinline__
#else
#define PRNN_HD inline
#endif

namespace packedrnn {

enum Cell : int64_t { kLSTM = 0, kGRU = 1 };

PRNN_HD float exp_(float x) { return expf(x); }
PRNN_HD double exp_(double x) { return exp(x); }
// tanh through exp: glibc's tanhf costs about 4 expf, and this form is within ~1e-7 absolute of it
// (the error budget of fp32 is 1e-5). It saturates cleanly: exp overflows to inf -> 1, underflows
// to 0 -> -1. Double keeps the library tanh (fp64 results are held to 1e-10).
PRNN_HD float tanh_(float x) { return 1.0f - 2.0f / (1.0f + expf(2.0f * x)); }
PRNN_HD double tanh_(double x) { return tanh(x); }
template <typename T> PRNN_HD T sigmoid_(T x) { return T(1) / (T(1) + exp_(-x)); }

// What the forward pass keeps per (direction, t, b) for the backward pass, as offsets into one
// row of K values of the `saved` tensor [D, T, B, K]. Everything else is recomputed.
//   LSTM: act (i, f, g, o after their nonlinearity, 4H), c_prev (H), m = o*tanh(c) (H, only with
//         a projection: the projection's weight gradient needs it), h_prev (P, for dW_hh)
//   GRU:  act (r, z, n, and hn = W_hn h + b_hn, 4H), h_prev (H)
struct SavedLayout {
  int64_t act, c_prev, m, h_prev, K;
  PRNN_HD SavedLayout(int64_t cell, int64_t H, int64_t P, bool proj) {
    act = 0;
    if (cell == kLSTM) {
      c_prev = 4 * H;
      m = 5 * H;
      h_prev = proj ? 6 * H : 5 * H;
    } else {
      c_prev = m = -1;
      h_prev = 4 * H;
    }
    K = h_prev + P;
  }
};

// LSTM forward for one unit. gi..go are pre-activations (x and h projections and both biases).
// Writes the four activations to act[0], act[H], act[2H], act[3H]; returns c, sets m = o*tanh(c).
template <typename acc_t, typename S>
PRNN_HD acc_t lstm_forward(acc_t gi, acc_t gf, acc_t gg, acc_t go, acc_t c_prev, S* act,
                           int64_t H, acc_t& m) {
  const acc_t i = sigmoid_(gi), f = sigmoid_(gf), g = tanh_(gg), o = sigmoid_(go);
  const acc_t c = f * c_prev + i * g;
  m = o * tanh_(c);
  if (act) {
    act[0] = S(i);
    act[H] = S(f);
    act[2 * H] = S(g);
    act[3 * H] = S(o);
  }
  return c;
}

// LSTM backward for one unit. dm = dL/dm (m = o*tanh(c)), dc_next = dL/dc from the next step.
// Writes dL/d(pre-activation) of i, f, g, o to dg[0], dg[H], dg[2H], dg[3H]; returns dL/dc_prev.
template <typename acc_t, typename S>
PRNN_HD acc_t lstm_backward(acc_t i, acc_t f, acc_t g, acc_t o, acc_t c_prev, acc_t dm,
                            acc_t dc_next, S* dg, int64_t H) {
  const acc_t c = f * c_prev + i * g;
  const acc_t tc = tanh_(c);
  const acc_t dc = dc_next + dm * o * (acc_t(1) - tc * tc);
  dg[0] = S(dc * g * i * (acc_t(1) - i));
  dg[H] = S(dc * c_prev * f * (acc_t(1) - f));
  dg[2 * H] = S(dc * i * (acc_t(1) - g * g));
  dg[3 * H] = S(dm * tc * o * (acc_t(1) - o));
  return dc * f;
}

// GRU forward for one unit. x* = x W_ih^T + b_ih, h* = h W_hh^T + b_hh (r, z, n rows).
// Writes r, z, n, hn to act[0], act[H], act[2H], act[3H] (when act is not null); returns h.
template <typename acc_t, typename S>
PRNN_HD acc_t gru_forward(acc_t xr, acc_t xz, acc_t xn, acc_t hr, acc_t hz, acc_t hn,
                          acc_t h_prev, S* act, int64_t H) {
  const acc_t r = sigmoid_(xr + hr), z = sigmoid_(xz + hz);
  const acc_t n = tanh_(xn + r * hn);
  if (act) {
    act[0] = S(r);
    act[H] = S(z);
    act[2 * H] = S(n);
    act[3 * H] = S(hn);
  }
  return (acc_t(1) - z) * n + z * h_prev;
}

// GRU backward for one unit, dh = dL/dh_t. Writes dL/d(x-projection) to dgx[0, H, 2H] and
// dL/d(h-projection) to dgh[0, H, 2H]; returns the direct part of dL/dh_prev (dh * z); the rest,
// dgh @ W_hh, is a matrix product over all units.
template <typename acc_t, typename S>
PRNN_HD acc_t gru_backward(acc_t r, acc_t z, acc_t n, acc_t hn, acc_t h_prev, acc_t dh, S* dgx,
                           S* dgh, int64_t H) {
  const acc_t dn = dh * (acc_t(1) - z) * (acc_t(1) - n * n);
  const acc_t dz = dh * (h_prev - n) * z * (acc_t(1) - z);
  const acc_t dr = dn * hn * r * (acc_t(1) - r);
  dgx[0] = S(dr);
  dgx[H] = S(dz);
  dgx[2 * H] = S(dn);
  dgh[0] = S(dr);
  dgh[H] = S(dz);
  dgh[2 * H] = S(dn * r);
  return dh * z;
}

}  // namespace packedrnn
