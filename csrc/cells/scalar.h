// The scalar functions and result types the cells share, for the CPU and CUDA kernels alike. Framework-free: plain
// scalars in and out; `T` is float or double (half types accumulate in float).
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

// What a cell's forward returns for one unit: the NA values the backward will read (kAct), the new
// cell state (cells with one; else 0) and the output (the new h, or the projection's input).
template <typename T, int NA>
struct CellStep {
  T act[NA];
  T c, out;
};
// What its backward returns: dL/d(pre-activation) of each of the NG gates through the input
// projection (dx) and through the recurrent one (dh: the same unless b_hh stays apart), dL/dc_{t-1}
// (cells with a cell state) and the part of dL/dh_{t-1} that does not pass through W_hh (direct).
template <typename T, int NG>
struct CellGrad {
  T dx[NG], dh[NG];
  T dc_prev, direct;
};

}  // namespace packedrnn
