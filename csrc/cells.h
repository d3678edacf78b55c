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

#include <cstring>

// Always inlined: the CPU kernels' loops over units vectorize only with the cell math inside them.
#if defined(__CUDACC__)
#define PRNN_HD __host__ __device__ __forceinline__
#elif defined(__GNUC__)
#define PRNN_HD inline __attribute__((always_inline))
#else
#define PRNN_HD inline
#endif

namespace packedrnn {

enum Cell : int64_t { kLSTM = 0, kGRU = 1 };

// exp for float. On the CPU a branch-free Cody-Waite reduction and the Cephes polynomial (1.3 ulp
// at most, checked against double exp over [-87, 88]), so that loops over units vectorize (a libm
// call does not); NaN stays NaN, and the result saturates at exp(+-87..88) instead of 0 or inf,
// which the sigmoid and tanh below absorb. CUDA keeps expf.
PRNN_HD float exp_cpu(float x) {
  x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  const float shifter = 12582912.0f;  // 1.5 * 2^23: adding it rounds x*log2(e) to an integer n
  const float t = x * 1.44269504088896341f + shifter, n = t - shifter;
  int32_t tb;
  std::memcpy(&tb, &t, 4);
  const int32_t ni = tb - 0x4B400000;  // n as an integer: the low bits of t
  const float r = (x - n * 0.693359375f) + n * 2.12194440e-4f;  // x - n*ln2, ln2 in two parts
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  const uint32_t sb = (uint32_t)(ni + 127) << 23;  // 2^n
  float scale;
  std::memcpy(&scale, &sb, 4);
  return p * scale;
}
PRNN_HD float exp_(float x) {
#if defined(__CUDA_ARCH__)
  return expf(x);
#else
  return exp_cpu(x);
#endif
}
PRNN_HD double exp_(double x) { return exp(x); }
// tanh through exp: glibc's tanhf costs about 4 expf, and this form is within ~1e-7 absolute of it
// (the error budget of fp32 is 1e-5). It saturates cleanly: exp overflows to inf -> 1, underflows
// to 0 -> -1. Double keeps the library tanh (fp64 results are held to 1e-10).
PRNN_HD float tanh_(float x) { return 1.0f - 2.0f / (1.0f + exp_(2.0f * x)); }
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

// The cell functions take and return values in the accumulation type (float or double); callers
// load and store their own storage types, so this header needs no half-precision conversions.

// LSTM forward for one unit; gi..go are pre-activations (x and h projections and both biases).
template <typename T>
struct LstmStep {
  T i, f, g, o;  // activations
  T c, m;        // new cell, m = o * tanh(c) (the output, or the projection's input)
};
template <typename T>
PRNN_HD LstmStep<T> lstm_forward(T gi, T gf, T gg, T go, T c_prev) {
  LstmStep<T> r;
  r.i = sigmoid_(gi);
  r.f = sigmoid_(gf);
  r.g = tanh_(gg);
  r.o = sigmoid_(go);
  r.c = r.f * c_prev + r.i * r.g;
  r.m = r.o * tanh_(r.c);
  return r;
}

// LSTM backward for one unit, from the saved activations and c_prev; dm = dL/dm, dc_next = dL/dc
// from the next step. Returns dL/d(pre-activation) of each gate and dL/dc_prev.
template <typename T>
struct LstmGrad {
  T di, df, dg, do_, dc_prev;
};
template <typename T>
PRNN_HD LstmGrad<T> lstm_backward(T i, T f, T g, T o, T c_prev, T dm, T dc_next) {
  const T c = f * c_prev + i * g;
  const T tc = tanh_(c);
  const T dc = dc_next + dm * o * (T(1) - tc * tc);
  LstmGrad<T> r;
  r.di = dc * g * i * (T(1) - i);
  r.df = dc * c_prev * f * (T(1) - f);
  r.dg = dc * i * (T(1) - g * g);
  r.do_ = dm * tc * o * (T(1) - o);
  r.dc_prev = dc * f;
  return r;
}

// GRU forward for one unit: x* = x W_ih^T + b_ih, h* = h W_hh^T + b_hh (r, z, n rows).
template <typename T>
struct GruStep {
  T r, z, n, h;
};
template <typename T>
PRNN_HD GruStep<T> gru_forward(T xr, T xz, T xn, T hr, T hz, T hn, T h_prev) {
  GruStep<T> s;
  s.r = sigmoid_(xr + hr);
  s.z = sigmoid_(xz + hz);
  s.n = tanh_(xn + s.r * hn);
  s.h = (T(1) - s.z) * s.n + s.z * h_prev;
  return s;
}

// GRU backward for one unit, dh = dL/dh_t; hn = W_hn h + b_hn as saved by the forward.
// dL/d(x projection) = (dr, dz, dn); dL/d(h projection) = (dr, dz, dhn); dh_prev is only the
// direct term dh * z: the rest, dL/d(h projection) @ W_hh, is a product over all units.
template <typename T>
struct GruGrad {
  T dr, dz, dn, dhn, dh_prev;
};
template <typename T>
PRNN_HD GruGrad<T> gru_backward(T r, T z, T n, T hn, T h_prev, T dh) {
  GruGrad<T> g;
  g.dn = dh * (T(1) - z) * (T(1) - n * n);
  g.dz = dh * (h_prev - n) * z * (T(1) - z);
  g.dr = g.dn * hn * r * (T(1) - r);
  g.dhn = g.dn * r;
  g.dh_prev = dh * z;
  return g;
}

}  // namespace packedrnn
