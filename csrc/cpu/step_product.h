// The small products of the CPU recurrence (one per step: h_{t-1} W_hh^T, and its relatives in the
// projection and the backward), on weights packed once per layer call.
//
// Shapes: a product maps rows A [n, K] (row stride lda) to output columns grouped in NG gates of
// Hg columns each. The columns are cut into blocks of U units (U = the vector width of the chosen
// ISA); block b holds, for every gate g, the columns g*Hg + b*U .. + U-1 (zero past Hg). Packed,
// block b is [K][NG][U] contiguous, so the micro-kernel streams it once per tile of rows while its
// accumulators (R rows x NG vectors) stay in registers. The result of a block is [n][NG][U].
//
// Each output value is one dot product summed over k = 0..K-1 in order, whatever the tiling or the
// thread that runs it: results do not depend on the thread count.
//
// The kernel is compiled three times (AVX-512, AVX2+FMA, the compiler's baseline) with GCC vector
// extensions, and the best one the CPU runs is picked once (isa()).
#pragma once

#include <stdint.h>

#include <algorithm>
#include <cstring>

namespace packedrnn {
namespace cpu {

// Where the packed operand comes from: element (output column o, k) is src[o * so + k * sk].
template <typename S>
struct Source {
  const S* src;
  int64_t so, sk;
};

// Packs block b (units b*U .. ) of a product with NG gates of Hg columns and K inputs into dst
// [K][NG][U].
// k outer, units inner: the packed block is written once, in order (other orders and a tiled
// transpose measured no faster: the copy is bound by reading W from memory).
template <typename S>
void pack_block(const Source<S>& w, int NG, int64_t Hg, int64_t K, int64_t U, int64_t b, S* dst) {
  const int64_t n = std::min(U, Hg - b * U);  // columns of this block; the rest are zero
  for (int64_t k = 0; k < K; ++k) {
    for (int g = 0; g < NG; ++g) {
      const S* src = w.src + (g * Hg + b * U) * w.so + k * w.sk;
      S* d = dst + (k * NG + g) * U;
      for (int64_t u = 0; u < n; ++u) d[u] = src[u * w.so];
      for (int64_t u = n; u < U; ++u) d[u] = S(0);
    }
  }
}

template <typename S, int VW>
struct Vec {
  typedef S type __attribute__((vector_size(VW * sizeof(S))));
};

// R rows of A times one packed block: C [R][NG][VW] = A [R, K] Wp [K][NG][VW].
template <typename S, int VW, int NG, int R>
inline __attribute__((always_inline)) void tile(int64_t K, const S* A, int64_t lda, const S* Wp, S* C) {
  typedef typename Vec<S, VW>::type V;
  V acc[R][NG];
  for (int r = 0; r < R; ++r)
    for (int g = 0; g < NG; ++g) acc[r][g] = V{};
  for (int64_t k = 0; k < K; ++k) {
    V w[NG];
    for (int g = 0; g < NG; ++g) std::memcpy(&w[g], Wp + (k * NG + g) * VW, sizeof(V));
    for (int r = 0; r < R; ++r) {
      const V a = A[r * lda + k] - V{};  // a broadcast (GCC emits one vbroadcast for this form)
      for (int g = 0; g < NG; ++g) acc[r][g] += a * w[g];
    }
  }
  for (int r = 0; r < R; ++r)
    for (int g = 0; g < NG; ++g) std::memcpy(C + (r * NG + g) * VW, &acc[r][g], sizeof(V));
}

// n rows: tiles of RMAX rows, then one smaller tile for the rest.
template <typename S, int VW, int NG, int RMAX>
inline __attribute__((always_inline)) void rows(int64_t n, int64_t K, const S* A, int64_t lda, const S* Wp, S* C) {
  int64_t r = 0;
  for (; r + RMAX <= n; r += RMAX) tile<S, VW, NG, RMAX>(K, A + r * lda, lda, Wp, C + r * NG * VW);
  const S* a = A + r * lda;
  S* c = C + r * NG * VW;
  switch (n - r) {
#define PRNN_TAIL(k)                                          \
  case k:                                                     \
    if constexpr (k < RMAX) tile<S, VW, NG, k>(K, a, lda, Wp, c); \
    break;
    PRNN_TAIL(1) PRNN_TAIL(2) PRNN_TAIL(3) PRNN_TAIL(4) PRNN_TAIL(5) PRNN_TAIL(6) PRNN_TAIL(7)
#undef PRNN_TAIL
    default: break;
  }
}

// Accumulators per tile: 24 of the 32 AVX-512 registers, 12 of the 16 elsewhere (the rest hold
// the packed row and the broadcast); at most 8 rows.
constexpr int rows_for(int registers, int NG) { return std::min(8, std::max(1, registers / NG)); }

template <typename S>
using ProductFn = void (*)(int64_t n, int64_t K, const S* A, int64_t lda, const S* Wp, S* C);

#if defined(__GNUC__) && defined(__x86_64__)
template <typename S, int NG>
__attribute__((target("avx512f,avx2,fma"))) void product_avx512(int64_t n, int64_t K, const S* A, int64_t lda,
                                                                 const S* Wp, S* C) {
  rows<S, 64 / sizeof(S), NG, rows_for(24, NG)>(n, K, A, lda, Wp, C);
}
template <typename S, int NG>
__attribute__((target("avx2,fma"))) void product_avx2(int64_t n, int64_t K, const S* A, int64_t lda, const S* Wp,
                                                      S* C) {
  rows<S, 32 / sizeof(S), NG, rows_for(12, NG)>(n, K, A, lda, Wp, C);
}
#endif
template <typename S, int NG>
void product_base(int64_t n, int64_t K, const S* A, int64_t lda, const S* Wp, S* C) {
  rows<S, 16 / sizeof(S), NG, rows_for(12, NG)>(n, K, A, lda, Wp, C);
}

enum class Isa { kAvx512, kAvx2, kBase };

inline Isa isa() {
#if defined(__GNUC__) && defined(__x86_64__)
  static const Isa best = __builtin_cpu_supports("avx512f")                                   ? Isa::kAvx512
                          : (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) ? Isa::kAvx2
                                                                                              : Isa::kBase;
  return best;
#else
  return Isa::kBase;
#endif
}

// The product for NG gates on this CPU, its block width U and its rows per tile R (a block of
// rows that is a multiple of R leaves no smaller, slower tile behind).
template <typename S, int NG>
struct Product {
  ProductFn<S> fn;
  int64_t U, R;
  Product() {
    switch (isa()) {
#if defined(__GNUC__) && defined(__x86_64__)
      case Isa::kAvx512: fn = &product_avx512<S, NG>, U = 64 / sizeof(S), R = rows_for(24, NG); return;
      case Isa::kAvx2: fn = &product_avx2<S, NG>, U = 32 / sizeof(S), R = rows_for(12, NG); return;
#endif
      default: fn = &product_base<S, NG>, U = 16 / sizeof(S), R = rows_for(12, NG); return;
    }
  }
  void operator()(int64_t n, int64_t K, const S* A, int64_t lda, const S* Wp, S* C) const { fn(n, K, A, lda, Wp, C); }
};

}  // namespace cpu
}  // namespace packedrnn
