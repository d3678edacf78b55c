// The large matrix products around the recurrence, through ATen (MKL/oneDNN on the CPU, cuBLAS on
// CUDA), shared by both backends. They run over N "token rows": the CPU gathers the valid (t, b)
// positions first (N = sum(lengths), no work on padding); so does CUDA when the caller passed the
// lengths on the CPU (an experiment, PACKEDRNN_TOKENS=1 in packedrnn.functional); with lengths on
// the device, which CUDA must not read on the host, it uses all N = T*B positions, with dgx/dgh
// zero at padded ones and padded x finite, so those contribute exactly nothing.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "layer_args.h"

namespace packedrnn {

// ---------------------------------------------------------------------------------------------
// fp32 products from bf16 tensor-core products, fp32-accurate (experiment PACKEDRNN_GEMM=bf16x6).
//
// Why: these products are most of an fp32 layer's FLOPs in training, and an fp32 GEMM runs at
// 51 TFLOP/s on an H200 where bf16 runs at 778 (anchors); TF32 alone fails our fp32 tolerance.
// How: each operand is split into three bf16 pieces, v = v0 + v1 + v2 with v1 = bf16(v - v0),
// v2 = bf16(v - v0 - v1) (each piece holds the next 8-9 significant bits, 24 in all: fp32's).
// Of the nine piece products, the six of size >= 2^-18 |A||B| are kept,
//   A B = A0 B0 + A0 B1 + A1 B0 + A0 B2 + A1 B1 + A2 B0  (+ terms below 2^-26 |A||B|),
// run as ONE bf16 GEMM with fp32 accumulation and output over six times the depth:
//   [A0 A0 A0 A1 A1 A2] [B0; B1; B2; B0; B1; B0]
// whose operands one kernel writes on CUDA (split_pieces.cu), ATen ops elsewhere.
// The products of bf16 pieces are exact in fp32, so on the CPU (tests) the same GEMM runs in fp32
// on the pieces. Work is cut into slices of the token rows so the pieces stay within ~200 MB.
// Known difference: an Inf in an operand meets the other operand's lower pieces (Inf * w1 with w1
// of either sign), so a row with an Inf at a real position of x gives NaN where fp32 products give
// +-Inf and the gates saturate. Padding never reaches these products (it is skipped or zeroed).

inline bool split_gemms(const at::Tensor& t) {
  if (t.scalar_type() != at::kFloat) return false;
  const char* v = std::getenv("PACKEDRNN_GEMM");
  if (v == nullptr || std::strcmp(v, "bf16x6") != 0) return false;
  // A caller who allows TF32 for matmuls gets it from the plain product, faster still.
  return !(t.is_cuda() && at::globalContext().allowTF32CuBLAS());
}

// The one-pass split of the CUDA build (split_pieces.cu), set when its glue loads; null: ATen ops.
using SplitPieces = void (*)(const at::Tensor& src, const at::Tensor& dst, bool stack_rows, unsigned order);
inline SplitPieces& cuda_split_pieces() {
  static SplitPieces fn = nullptr;
  return fn;
}

// Which piece each of the six copies holds, two bits per copy (copy j: (order >> 2j) & 3).
constexpr unsigned piece_order(unsigned p0, unsigned p1, unsigned p2, unsigned p3, unsigned p4, unsigned p5) {
  return p0 | p1 << 2 | p2 << 4 | p3 << 6 | p4 << 8 | p5 << 10;
}

// Six copies of v's bf16 pieces concatenated along v's dimension `dim` (0 or 1). A transposed v
// is split along its stored layout and transposed back, so the product reads a transposed
// operand instead of the split writing one.
inline at::Tensor stacked_pieces(const at::Tensor& v, int64_t dim, unsigned order) {
  if (v.stride(0) == 1 && v.stride(1) != 1) return stacked_pieces(v.t(), 1 - dim, order).t();
  const at::Tensor src = v.stride(1) == 1 ? v : v.contiguous();
  if (src.is_cuda() && cuda_split_pieces() != nullptr) {
    const int64_t R = src.size(0), C = src.size(1);
    at::Tensor dst = at::empty(dim == 0 ? at::IntArrayRef{6 * R, C} : at::IntArrayRef{R, 6 * C},
                               src.options().dtype(at::kBFloat16));
    cuda_split_pieces()(src, dst, dim == 0, order);
    return dst;
  }
  const at::Tensor v0 = src.to(at::kBFloat16), rest = src - v0, v1 = rest.to(at::kBFloat16);
  const at::Tensor piece[3] = {v0, v1, (rest - v1).to(at::kBFloat16)};
  std::vector<at::Tensor> copies;
  for (int j = 0; j < 6; ++j) copies.push_back(piece[(order >> (2 * j)) & 3]);
  return at::cat(copies, dim);
}

// out (+)= A B for A [M, K], B [K, N], out fp32 [M, N], as the six piece products.
inline void mm_bf16x6(at::Tensor out, const at::Tensor& A, const at::Tensor& B, bool accumulate) {
  at::Tensor Ak = stacked_pieces(A, 1, piece_order(0, 0, 0, 1, 1, 2));
  at::Tensor Bk = stacked_pieces(B, 0, piece_order(0, 1, 2, 0, 1, 0));
  if (!A.is_cuda()) Ak = Ak.to(at::kFloat), Bk = Bk.to(at::kFloat);
  if (accumulate) {
    out.add_(A.is_cuda() ? at::mm(Ak, Bk, at::kFloat) : at::mm(Ak, Bk));
  } else if (A.is_cuda()) {
    at::mm_out(out, Ak, Bk, at::kFloat);
  } else {
    at::mm_out(out, Ak, Bk);
  }
}

// out = A B (+ bias), or out += A B (accumulate): the plain product, or the six piece products in
// slices of the token dimension (the longest: M for gx and dx, K for the weight gradients).
inline void mm_into(at::Tensor out, const at::Tensor& A, const at::Tensor& B, bool accumulate,
                    const at::Tensor& bias = {}) {
  if (!split_gemms(A)) {
    if (accumulate) {
      out.addmm_(A, B);
    } else if (bias.defined()) {
      at::addmm_out(out, bias, A, B);
    } else {
      at::mm_out(out, A, B);
    }
    return;
  }
  const int64_t M = A.size(0), K = A.size(1), N = B.size(1);
  if (K == 0 && !accumulate) out.zero_();
  // Elements of one operand or product per slice: pieces ~200 MB (PACKEDRNN_GEMM_SLICE, for tests).
  const char* slice = std::getenv("PACKEDRNN_GEMM_SLICE");
  const int64_t kSliceElems = slice != nullptr ? std::max<int64_t>(1, std::atoll(slice)) : int64_t(1) << 24;
  if (K >= M) {
    const int64_t step = std::max<int64_t>(1, kSliceElems / std::max(M, N));
    for (int64_t k = 0; k < K; k += step) {
      const int64_t n = std::min(step, K - k);
      mm_bf16x6(out, A.narrow(1, k, n), B.narrow(0, k, n), accumulate || k > 0);
    }
  } else {
    const int64_t step = std::max<int64_t>(1, kSliceElems / std::max(K, N));
    for (int64_t i = 0; i < M; i += step) {
      const int64_t n = std::min(step, M - i);
      mm_bf16x6(out.narrow(0, i, n), A.narrow(0, i, n), B, accumulate);
    }
  }
  if (bias.defined()) out.add_(bias);
}

// The flat positions t*B + b of the valid tokens (t < lengths[b]), time-major, from int64 lengths
// on the CPU: the token rows' order.
inline at::Tensor valid_positions(const at::Tensor& lengths, int64_t T, int64_t B) {
  return (at::arange(T, lengths.options()).unsqueeze(1) < lengths.unsqueeze(0)).view({T * B}).nonzero().squeeze(1);
}

// gx [D, N, G] = x_rows [N, I] W_ih^T + b_ih (+ b_hh for LSTM, where both biases simply add; GRU
// keeps b_hh apart because its n gate multiplies r into W_hn h + b_hn).
inline at::Tensor input_projection(const LayerArgs& a, const at::Tensor& x2, const at::Tensor& w_ih,
                                   const std::optional<at::Tensor>& b_ih,
                                   const std::optional<at::Tensor>& b_hh) {
  at::Tensor gx = at::empty({a.D, x2.size(0), a.G}, x2.options());
  for (int64_t d = 0; d < a.D; ++d) {
    const at::Tensor b = !a.bias ? at::Tensor() : a.cell == kLSTM ? (*b_ih)[d] + (*b_hh)[d] : (*b_ih)[d];
    mm_into(gx[d], x2, w_ih[d].t(), false, b);
  }
  return gx;
}

// The gradients of everything but the recurrence, over N token rows, from
//   x2 [N, I]   h_prev [D, N, P] and m [D, N, H] (projection) of the saved rows
//   dgx [D, N, G] dL/d(x projection)   dgh [D, N, G] dL/d(h projection) (the same tensor for LSTM)
//   dH [D, N, P] dL/dh (projection)
// Returns dx_rows [N, I], dw_ih, dw_hh, db_ih, db_hh, dw_hr (empty where absent).
inline std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
weight_and_input_grads(const LayerArgs& a, const at::Tensor& x2, const at::Tensor& w_ih,
                       const at::Tensor& h_prev, const at::Tensor& m, const at::Tensor& dgx,
                       const at::Tensor& dgh, const at::Tensor& dH) {
  const auto opt = x2.options();
  at::Tensor dx = at::empty({x2.size(0), a.I}, opt);
  at::Tensor dw_ih = at::empty_like(w_ih);
  at::Tensor dw_hh = at::empty({a.D, a.G, a.P}, opt);
  at::Tensor dw_hr = a.proj ? at::empty({a.D, a.P, a.H}, opt) : at::empty({0}, opt);
  for (int64_t d = 0; d < a.D; ++d) {
    mm_into(dx, dgx[d], w_ih[d], /*accumulate=*/d > 0);
    mm_into(dw_ih[d], dgx[d].t(), x2, false);
    mm_into(dw_hh[d], dgh[d].t(), h_prev[d], false);
    if (a.proj) mm_into(dw_hr[d], dH[d].t(), m[d], false);
  }
  at::Tensor db_ih = a.bias ? dgx.sum(1) : at::empty({0}, opt);
  at::Tensor db_hh = a.bias ? (a.cell == kLSTM ? db_ih.clone() : dgh.sum(1)) : at::empty({0}, opt);
  return {dx, dw_ih, dw_hh, db_ih, db_hh, dw_hr};
}

}  // namespace packedrnn
