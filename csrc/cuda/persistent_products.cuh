// block_gemm: the persistent kernels' products from shared memory, Y = Ws X^T with every thread of
// a block; FFMA for fp32, tensor cores (mma.sync m16n8k16) for bf16 and fp16.
#pragma once

#include <type_traits>

#include "persistent_stage.cuh"

namespace packedrnn {
namespace persistent {

// The products Y[j][r] = sum_k Ws[j][k] * Xs[r][k] (j < JT rows of Ws, r < n <= NC rows of Xs),
// with every thread of the block: block_gemm. fp32 runs on the CUDA cores (FFMA, exact fp32
// products); bf16 and fp16 run on the tensor cores (mma.sync, fp32 accumulation). fp32 through
// 3xTF32 tensor-core products was built and measured slower than FFMA here (RESULTS.md).

// --- fp32: FFMA -------------------------------------------------------------------------------

__device__ __forceinline__ void load4(const float* p, float (&v)[4]) {
  const float4 x = *reinterpret_cast<const float4*>(p);
  v[0] = x.x, v[1] = x.y, v[2] = x.z, v[3] = x.w;
}

// One group of nr <= NR rows: Y[j][r0 + r]. Branch-free inner loop (rows past nr re-read row
// nr - 1, and their sums are dropped), so the NR shared-memory loads of a step issue back to back:
// with 8 warps per SM the loop is bound by load latency unless each warp keeps many in flight.
// A thread holds RJ rows of Ws, JG = JT / RJ apart (w points at the first): RJ = 2 (where JT >= 16)
// loads each row of Xs once for twice the products (fp32 steps 1-8% faster on an H200, RESULTS.md).
template <int NR, int JT, int RJ>
__device__ __forceinline__ void gemm_group(const Gemm& gm, int NC, const float* w, const float* x, int nr, int r0,
                                           float* red, float* Y) {
  constexpr int JG = JT / RJ;                  // threads along the rows of Ws
  constexpr int stride = 4 * (kThreads / JG);  // between a thread's pieces of K
  const int j = threadIdx.x % JG, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  int off[NR];
#pragma unroll
  for (int r = 0; r < NR; ++r) off[r] = min(r, nr - 1) * gm.ld;
  float acc[RJ][NR];
#pragma unroll
  for (int i = 0; i < RJ; ++i) {
#pragma unroll
    for (int r = 0; r < NR; ++r) acc[i][r] = 0.f;
  }
  [[maybe_unused]] constexpr int unroll = RJ == 1 ? 2 : 1;  // within 255 registers
#pragma unroll unroll
  for (int kk = 0; kk < gm.Kp; kk += stride) {
    float wv[RJ][4], xv[NR][4];
#pragma unroll
    for (int i = 0; i < RJ; ++i) load4(w + i * JG * gm.ld + kk, wv[i]);
#pragma unroll
    for (int r = 0; r < NR; ++r) load4(x + off[r] + kk, xv[r]);
#pragma unroll
    for (int i = 0; i < RJ; ++i) {
#pragma unroll
      for (int r = 0; r < NR; ++r) {
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[i][r] = fmaf(wv[i][e], xv[r][e], acc[i][r]);
      }
    }
  }
#pragma unroll
  for (int o = JG; o < 32; o <<= 1) {  // the slices of the same rows inside the warp
#pragma unroll
    for (int i = 0; i < RJ; ++i) {
#pragma unroll
      for (int r = 0; r < NR; ++r) acc[i][r] += __shfl_xor_sync(0xffffffffu, acc[i][r], o);
    }
  }
  if (lane < JG) {
#pragma unroll
    for (int i = 0; i < RJ; ++i) {
#pragma unroll
      for (int r = 0; r < NR; ++r) red[(warp * JT + j + i * JG) * kTile + r] = acc[i][r];
    }
  }
  __syncthreads();
  for (int e = threadIdx.x; e < JT * nr; e += kThreads) {  // then across the warps
    const int jj = e / nr, r = e % nr;
    float v = 0.f;
#pragma unroll
    for (int wi = 0; wi < kWarps; ++wi) v += red[(wi * JT + jj) * kTile + r];
    Y[jj * NC + r0 + r] = v;
  }
  __syncthreads();
}

// Thread t takes row j = t % JG of Ws (and j + JG, ... up to RJ rows) and slice c = t / JG of K:
// the pieces of four values at k = 4 * (c + i * kThreads / JG), interleaved so that the slices of
// one warp read adjacent 16-byte pieces (distinct banks; lanes that share c read the same Xs
// address: a broadcast). It holds 4 * RJ Ws values at a time in registers against up to kTile
// rows of Xs. The slices are summed with shuffles inside a warp, then through `red` across warps.
template <int JT, int RJ>
__device__ void block_gemm_ffma(const Gemm& gm, int NC, const float* Ws, const float* Xs, int n, int groups,
                                float* red, float* Y) {
  constexpr int JG = JT / RJ;
  static_assert(JG <= 32, "a warp holds all slices of at most 32 / JG rows");
  const int k0 = 4 * (threadIdx.x / JG);
  const float* w = Ws + (size_t)(threadIdx.x % JG) * gm.ld + k0;
  for (int r0 = 0; r0 < n; r0 += kTile) {
    tile_ready(groups, r0 / kTile);
    const int nr = min(kTile, n - r0);
    const float* x = Xs + (size_t)r0 * gm.ld + k0;
    if (nr > 8) {
      gemm_group<16, JT, RJ>(gm, NC, w, x, nr, r0, red, Y);
    } else if (nr > 4) {
      gemm_group<8, JT, RJ>(gm, NC, w, x, nr, r0, red, Y);
    } else if (nr > 2) {
      gemm_group<4, JT, RJ>(gm, NC, w, x, nr, r0, red, Y);
    } else {
      gemm_group<2, JT, RJ>(gm, NC, w, x, nr, r0, red, Y);
    }
  }
}

// --- bf16 and fp16: tensor cores ----------------------------------------------------------------
// One warp: D(16x8, fp32) += A(16x16) B(16x8), A rows of Xs, B columns = rows of Ws (at few rows
// the other way round: block_gemm_mma_gates). Fragment layouts of mma.m16n8k16 (PTX ISA),
// g = lane / 4, q = lane % 4, two 16-bit values per register:
//   A {A[g][2q..2q+1], A[g+8][2q..], A[g][2q+8..], A[g+8][2q+8..]}   B {B[2q..2q+1][g], B[2q+8..][g]}
//   D {D[g][2q], D[g][2q+1], D[g+8][2q], D[g+8][2q+1]}

// d[t] += A B_t over k in [k, k + 16) for NT column tiles: A rows from x0 (row g) and x8 (row
// g + 8), B_t from w[t] (row t*8 + g of Ws).
template <int NT, typename S>
__device__ __forceinline__ void mma_step(float (&d)[NT][4], const S* x0, const S* x8,
                                         const S* const (&w)[NT], int k, int q4) {
  const int c = k + 2 * q4;
  const unsigned a[4] = {*reinterpret_cast<const unsigned*>(x0 + c), *reinterpret_cast<const unsigned*>(x8 + c),
                         *reinterpret_cast<const unsigned*>(x0 + c + 8),
                         *reinterpret_cast<const unsigned*>(x8 + c + 8)};
#pragma unroll
  for (int t = 0; t < NT; ++t) {
    const unsigned b[2] = {*reinterpret_cast<const unsigned*>(w[t] + c),
                           *reinterpret_cast<const unsigned*>(w[t] + c + 8)};
    mma(d[t], a, b, S());
  }
}

// The rows of Xs go in tiles of 16 (the m of the mma), all JT rows of Ws at once (NT tiles of 8:
// the n), so each Xs fragment is loaded once. With fewer tiles than warps, the warps of a tile
// split K and add their parts through `red`. Rows past n and Ws rows past JT read the last valid
// row and are dropped.
template <int JT, typename S>
__device__ void block_gemm_mma(const Gemm& gm, int NC, const S* Ws, const S* Xs, int n, int groups, float* red,
                               float* Y) {
  constexpr int NT = JT >= 8 ? JT / 8 : 1;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, q4 = lane % 4;
  const int tiles = (n + kTile - 1) / kTile;
  int split = 1;  // warps per tile
  while (split < kWarps && tiles * split * 2 <= kWarps) split *= 2;
  const int part = warp % split, span = gm.Kp / split;  // Kp is a multiple of 128 = 8 * 16
  const S* w[NT];
#pragma unroll
  for (int t = 0; t < NT; ++t) w[t] = Ws + (size_t)min(t * 8 + g, JT - 1) * gm.ld;
  const int per_round = kWarps / split;  // tiles the warps take at once
  for (int first = 0; first < tiles; first += per_round) {
    tile_ready(groups, min(first + per_round, tiles) - 1);
    const int m = first + warp / split;
    if (m >= tiles) continue;
    const int m0 = m * kTile;
    const S* x0 = Xs + (size_t)min(m0 + g, n - 1) * gm.ld;
    const S* x8 = Xs + (size_t)min(m0 + g + 8, n - 1) * gm.ld;
    float d[NT][4];
#pragma unroll
    for (int t = 0; t < NT; ++t) d[t][0] = d[t][1] = d[t][2] = d[t][3] = 0.f;
#pragma unroll 2
    for (int k = part * span; k < (part + 1) * span; k += 16) mma_step<NT>(d, x0, x8, w, k, q4);
#pragma unroll
    for (int t = 0; t < NT; ++t) {
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        if (split > 1) {
          red[(warp * NT + t) * 128 + lane * 4 + i] = d[t][i];
        } else {
          const int r = m0 + g + 8 * (i / 2), j = t * 8 + 2 * q4 + i % 2;
          if (r < n && j < JT) Y[j * NC + r] = d[t][i];
        }
      }
    }
  }
  if (split > 1) {
    __syncthreads();
    for (int e = threadIdx.x; e < tiles * NT * 128; e += kThreads) {
      const int m = e / (NT * 128), t = e / 128 % NT, l = e % 128 / 4, i = e % 4;
      const int r = m * kTile + l / 4 + 8 * (i / 2), j = t * 8 + 2 * (l % 4) + i % 2;
      if (r >= n || j >= JT) continue;
      float v = 0.f;
      for (int p = 0; p < split; ++p) v += red[((m * split + p) * NT + t) * 128 + l * 4 + i];
      Y[j * NC + r] = v;
    }
  }
  __syncthreads();
}

// Few rows (n <= 8): the product the other way round, D(16x8) += A B with A = 16 rows of Ws (the
// m) and B = the tile of 8 rows of Xs (the n). That is half the mma of block_gemm_mma, whose m
// would be the rows (half of it padding), and half the reads of Xs. The JT / 16 tiles of Ws rows
// take kWarps / (JT / 16) warps each, which split K and add their parts through `red`. Two
// accumulators (even and odd k) halve the chain of dependent mma.
template <int JT, typename S>
__device__ void block_gemm_mma_gates(const Gemm& gm, int NC, const S* Ws, const S* Xs, int n, int groups,
                                     float* red, float* Y) {
  static_assert(JT >= 16 && JT <= 16 * kWarps / 2, "two warps or more per tile of 16 rows of Ws");
  constexpr int MT = JT / 16, split = kWarps / MT;  // tiles of Ws rows, warps per tile
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, q4 = lane % 4;
  const int m = warp % MT, part = warp / MT, span = gm.Kp / split;  // Kp: a multiple of 128
  auto word = [](const S* p) { return *reinterpret_cast<const unsigned*>(p); };
  tile_ready(groups, 0);
  const S* w0 = Ws + (size_t)(m * 16 + g) * gm.ld + 2 * q4;
  const S* w8 = w0 + 8 * (size_t)gm.ld;
  const S* x = Xs + (size_t)min(g, n - 1) * gm.ld + 2 * q4;
  float d[2][4] = {};  // [k parity]
#pragma unroll 2
  for (int k = part * span; k < (part + 1) * span; k += 16) {
    const unsigned a[4] = {word(w0 + k), word(w8 + k), word(w0 + k + 8), word(w8 + k + 8)};
    const unsigned b[2] = {word(x + k), word(x + k + 8)};
    mma(d[(k / 16) & 1], a, b, S());
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) red[warp * 128 + lane * 4 + i] = d[0][i] + d[1][i];
  __syncthreads();
  for (int e = threadIdx.x; e < MT * 128; e += kThreads) {
    const int mm = e / 128, l = e % 128 / 4, i = e % 4;
    const int r = 2 * (l % 4) + i % 2, j = mm * 16 + l / 4 + 8 * (i / 2);
    if (r >= n) continue;
    float v = 0.f;
    for (int pp = 0; pp < split; ++pp) v += red[(pp * MT + mm) * 128 + l * 4 + i];
    Y[j * NC + r] = v;
  }
  __syncthreads();
}

// Fixed order throughout, so results are bitwise repeatable. `groups`: what stage_rows returned
// for Xs. Every thread of the block must call it; it ends past a __syncthreads.
template <int JT, typename S>
__device__ void block_gemm(const Gemm& gm, int NC, const S* Ws, const S* Xs, int n, int groups, float* red,
                           float* Y) {
  if constexpr (std::is_same<S, float>::value) {
    block_gemm_ffma<JT, JT >= 16 ? 2 : 1>(gm, NC, Ws, Xs, n, groups, red, Y);
  } else {
    if constexpr (JT >= 16) {
      if (n <= 8) return block_gemm_mma_gates<JT>(gm, NC, Ws, Xs, n, groups, red, Y);
    }
    block_gemm_mma<JT>(gm, NC, Ws, Xs, n, groups, red, Y);
  }
}

}  // namespace persistent
}  // namespace packedrnn
