// CPU implementation of packedrnn::rnn_layer and packedrnn::rnn_layer_backward (schemas and the
// shape legend: ops.cpp and cells.h).
//
// Algorithm, per direction:
//   1. The valid (t, b) positions are gathered into N = sum(lengths) token rows (time-major), and
//      gx = x W_ih^T + b is one GEMM over them (layer_gemms.h): no work on padding.
//   2. Rows are visited in order of decreasing length (a CPU-side argsort of `lengths`; the
//      caller's order is untouched), so at step s the active rows are the first n(s) of that order
//      and the recurrent product is one contiguous GEMM over them: gh[n, G] = h[n, P] W_hh^T.
//      The cell update (its trait, cells/*.h) then runs per active row, in parallel; t = s forward, or
//      lengths[b]-1-s in reverse. Padded x is never read; finished rows are never touched.
//   3. Backward walks the steps in reverse with the same active sets, producing dgx/dgh per token
//      row; the weight and input gradients are then large GEMMs over the N rows (layer_gemms.h).
// The per-step GEMMs call the BLAS that torch itself links (sgemm_/dgemm_, resolved weakly at
// load time) to avoid an ATen dispatch per step; where torch has none, ATen's addmm is used.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <numeric>
#include <vector>

#include "cells.h"
#include "layer_args.h"
#include "layer_gemms.h"

extern "C" {
void sgemm_(const char*, const char*, const int*, const int*, const int*, const float*, const float*,
            const int*, const float*, const int*, const float*, float*, const int*) __attribute__((weak));
void dgemm_(const char*, const char*, const int*, const int*, const int*, const double*, const double*,
            const int*, const double*, const int*, const double*, double*, const int*)
    __attribute__((weak));
}

namespace packedrnn {
namespace {

// Row-major C[m, n] = A[m, k] op(B) + beta C, where op(B) = B^T for B stored [n, k] (trans_b) or
// B for B stored [k, n]. Expressed to column-major BLAS as C^T = op(B)^T A^T.
template <typename S>
void gemm(int64_t m, int64_t n, int64_t k, const S* A, int64_t lda, const S* B, int64_t ldb,
          bool trans_b, S beta, S* C, int64_t ldc) {
  if (m == 0 || n == 0) return;
  const bool blas = std::is_same<S, float>::value ? sgemm_ != nullptr : dgemm_ != nullptr;
  if (blas) {
    const char ta = trans_b ? 'T' : 'N', tb = 'N';
    const int M = n, N = m, K = k, LA = ldb, LB = lda, LC = ldc;
    const S one = 1;
    if constexpr (std::is_same<S, float>::value) {
      sgemm_(&ta, &tb, &M, &N, &K, &one, B, &LA, A, &LB, &beta, C, &LC);
    } else {
      dgemm_(&ta, &tb, &M, &N, &K, &one, B, &LA, A, &LB, &beta, C, &LC);
    }
    return;
  }
  const auto opt = at::TensorOptions().dtype(c10::CppTypeToScalarType<S>::value);
  at::Tensor a = at::from_blob(const_cast<S*>(A), {m, k}, {lda, 1}, opt);
  at::Tensor b = trans_b ? at::from_blob(const_cast<S*>(B), {n, k}, {ldb, 1}, opt).t()
                         : at::from_blob(const_cast<S*>(B), {k, n}, {ldb, 1}, opt);
  at::Tensor c = at::from_blob(C, {m, n}, {ldc, 1}, opt);
  if (beta == S(0)) c.zero_();
  c.addmm_(a, b, beta, 1);
}

// Row indices sorted by decreasing length (stable, so ties keep the caller's order).
std::vector<int64_t> by_length(const int64_t* len, int64_t B) {
  std::vector<int64_t> order(B);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return len[a] > len[b]; });
  return order;
}

// The cell updates of one row, as plain loops over its units so that the compiler vectorizes them
// (the exp of cells.h is branch-free arithmetic here), built for AVX-512, AVX2 and the x86-64
// baseline and picked when the library loads (GCC target_clones; elsewhere one build). Pointers
// are __restrict__: every array is a distinct buffer or a disjoint part of one saved row.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__GLIBC__)  // ifunc
#define PRNN_CPU_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define PRNN_CPU_CLONES
#endif

// The cell's forward over the units of one row (cells/*.h): gx, gh the row's projections (gh with
// b_hh where the cell keeps it apart), h in h_{t-1} and out the cell's output (the new h, or m
// before a projection), c in c_{t-1} and out c_t (cells with a cell state). With `act` (the saved
// row), also the cell's activations at act[k*H + u] and c_{t-1} at c_prev[u]. Two loops, each
// without a branch inside: a conditional store keeps GCC from vectorizing it.
template <typename Cell, bool Save, typename S>
inline __attribute__((always_inline)) void cells_forward_loop(int64_t H, const S* __restrict__ gx,
                                                              const S* __restrict__ gh, S* __restrict__ h,
                                                              S* __restrict__ c, S* __restrict__ act,
                                                              S* __restrict__ c_prev) {
  constexpr int NG = Cell::kGates;
  for (int64_t u = 0; u < H; ++u) {
    S x[NG], y[NG];
    for (int g = 0; g < NG; ++g) x[g] = gx[g * H + u], y[g] = gh[g * H + u];
    const S cp = Cell::kCellState ? c[u] : S(0);
    const auto r = Cell::forward(x, y, h[u], cp);
    if (Save) {
      for (int k = 0; k < Cell::kAct; ++k) act[k * H + u] = r.act[k];
      if (Cell::kCellState) c_prev[u] = cp;
    }
    if (Cell::kCellState) c[u] = r.c;
    h[u] = r.out;
  }
}
template <typename Cell, typename S>
PRNN_CPU_CLONES void cells_forward(int64_t H, const S* __restrict__ gx, const S* __restrict__ gh,
                                   S* __restrict__ h, S* __restrict__ c, S* __restrict__ act,
                                   S* __restrict__ c_prev) {
  if (act == nullptr) {
    cells_forward_loop<Cell, false>(H, gx, gh, h, c, act, c_prev);
  } else {
    cells_forward_loop<Cell, true>(H, gx, gh, h, c, act, c_prev);
  }
}

// The cell's backward over the units of one row: from the saved activations and `prev` (c_prev or
// h_prev, SavedLayout::prev) and dout = dL/d(the cell's output), the gate gradients of the h
// projection into dh, those of the x projection into dx where they differ (null otherwise: the
// caller copies dh), dc (in from t+1, out to t-1; cells with a cell state) and the direct part of
// dL/dh_{t-1} into direct (cells with one).
template <typename Cell, typename S>
PRNN_CPU_CLONES void cells_backward(int64_t H, const S* __restrict__ act, const S* __restrict__ prev,
                                    const S* __restrict__ dout, S* __restrict__ dc, S* __restrict__ dx,
                                    S* __restrict__ dh, S* __restrict__ direct) {
  constexpr int NG = Cell::kGates;
  for (int64_t u = 0; u < H; ++u) {
    S a[Cell::kAct];
    for (int k = 0; k < Cell::kAct; ++k) a[k] = act[k * H + u];
    const auto g = Cell::backward(a, prev[u], dout[u], Cell::kCellState ? dc[u] : S(0));
    for (int k = 0; k < NG; ++k) dh[k * H + u] = g.dh[k];
    if (Cell::kBiasApart) {
      for (int k = 0; k < NG; ++k) dx[k * H + u] = g.dx[k];
    }
    if (Cell::kCellState) dc[u] = g.dc_prev;
    if (Cell::kDirect) direct[u] = g.direct;
  }
}

// The token rows (ops.cpp, `tokens`): row[t*B + b] is the row of (t, b), -1 for padding; index the
// flat positions of rows 0..N-1. The caller's tokens must be exactly the valid positions of the
// lengths (in any order), else a clear error: a position out of range, twice, missing or padded
// would send the loops below outside their buffers.
struct Tokens {
  std::vector<int64_t> row;
  at::Tensor index;
  int64_t N;
  Tokens(const std::optional<at::Tensor>& tokens, const int64_t* len, int64_t T, int64_t B) : row(T * B, -1) {
    PACKEDRNN_CHECK(tokens.has_value(), "the CPU op takes tokens = torch.ops.packedrnn.token_index(lengths, T)");
    index = tokens->contiguous();
    N = index.numel();
    const int64_t* flat = index.const_data_ptr<int64_t>();
    int64_t valid = 0;
    for (int64_t b = 0; b < B; ++b) valid += len[b];
    PACKEDRNN_CHECK(N == valid, "tokens holds ", N, " positions, but the lengths have ", valid);
    for (int64_t i = 0; i < N; ++i) {
      const int64_t pos = flat[i];
      PACKEDRNN_CHECK(pos >= 0 && pos < T * B && row[pos] < 0 && pos / B < len[pos % B], "tokens[", i,
                        "] = ", pos, " is not a valid position of the lengths, or repeats one");
      row[pos] = i;
    }
  }
};

// Rows per parallel chunk: about 8192 cell updates (1-2 ns each vectorized; measured on 2 cores,
// 2048 per chunk spent more on task hand-off than it saved), enough to amortise a task.
int64_t grain(int64_t units_per_row) { return std::max<int64_t>(1, 8192 / std::max<int64_t>(1, units_per_row)); }

// Pointers of one direction, all contiguous. Shapes as in ops.cpp, with d fixed.
template <typename S>
struct Dir {
  int64_t d;
  bool reverse;
  const S* w_hh;  // [G, P]
  const S* b_hh;  // [G], cells that keep it apart (GRU; the others fold it into gx); may be null
  const S* w_hr;  // [P, H] or null
};

template <typename Cell, typename S>
void forward_direction(const LayerArgs& a, const Dir<S>& dir, const int64_t* len,
                       const std::vector<int64_t>& order, const int64_t* row, const S* gx /*[N, G]*/,
                       const S* h0 /*[B, P]*/, const S* c0 /*[B, H] or null*/, S* out /*[T, B, D*P]*/,
                       S* h_n /*[B, P]*/, S* c_n /*[B, H] or null*/, S* saved /*[N, K] or null*/) {
  const int64_t B = a.B, H = a.H, P = a.P, G = a.G, DP = a.D * a.P;
  const SavedLayout& L = a.layout;
  constexpr bool with_c = Cell::kCellState;
  std::vector<S> h(B * P), c(with_c ? B * H : 0), gh(B * G), m(a.proj ? B * H : 0), hp(a.proj ? B * P : 0);
  for (int64_t j = 0; j < B; ++j) {
    std::copy_n(h0 + order[j] * P, P, &h[j * P]);
    if (with_c) std::copy_n(c0 + order[j] * H, H, &c[j * H]);
  }
  auto time = [&](int64_t b, int64_t s) { return dir.reverse ? len[b] - 1 - s : s; };
  int64_t n = B;
  for (int64_t s = 0;; ++s) {
    while (n > 0 && len[order[n - 1]] <= s) --n;
    if (n == 0) break;
    gemm<S>(n, G, P, h.data(), P, dir.w_hh, P, true, S(0), gh.data(), G);
    at::parallel_for(0, n, grain(H), [&](int64_t begin, int64_t end) {
      for (int64_t j = begin; j < end; ++j) {
        const int64_t b = order[j], t = time(b, s), r = row[t * B + b];
        S* hj = &h[j * P];
        S* sv = saved ? saved + r * L.K : nullptr;
        if (sv) std::copy_n(hj, P, sv + L.h_prev);
        S* ghr = &gh[j * G];  // add b_hh in place where the cell keeps it apart (GRU saves W_hn h + b_hn)
        if (Cell::kBiasApart && dir.b_hh) for (int64_t k = 0; k < G; ++k) ghr[k] += dir.b_hh[k];
        S* mj = a.proj ? &m[j * H] : hj;  // with a projection, h = m W_hr^T after the loop (a
                                          // projecting cell, LSTM, takes no h_{t-1} in its math)
        cells_forward<Cell, S>(H, gx + r * G, ghr, mj, with_c ? &c[j * H] : nullptr, sv ? sv + L.act : nullptr,
                               sv && with_c ? sv + L.c_prev : nullptr);
        if (a.proj) {
          if (sv) std::copy_n(mj, H, sv + L.m);
        } else {
          std::copy_n(hj, H, out + (t * B + b) * DP + dir.d * P);
        }
      }
    });
    if (a.proj) {  // h = m W_hr^T, a second product per step
      gemm<S>(n, P, H, m.data(), H, dir.w_hr, H, true, S(0), hp.data(), P);
      for (int64_t j = 0; j < n; ++j) {
        const int64_t b = order[j], t = time(b, s);
        std::copy_n(&hp[j * P], P, &h[j * P]);
        std::copy_n(&hp[j * P], P, out + (t * B + b) * DP + dir.d * P);
      }
    }
  }
  for (int64_t j = 0; j < B; ++j) {
    std::copy_n(&h[j * P], P, h_n + order[j] * P);
    if (with_c) std::copy_n(&c[j * H], H, c_n + order[j] * H);
  }
}

template <typename Cell, typename S>
void backward_direction(const LayerArgs& a, const Dir<S>& dir, const int64_t* len,
                        const std::vector<int64_t>& order, const int64_t* row, const S* saved /*[N, K]*/,
                        const S* grad_out /*[T, B, D*P]*/, const S* grad_hn /*[B, P]*/,
                        const S* grad_cn /*[B, H] or null*/, S* dgx /*[N, G]*/,
                        S* dgh /*[N, G]; == dgx unless the cell keeps b_hh apart*/, S* dH /*[N, P] or null*/,
                        S* dh0 /*[B, P]*/, S* dc0 /*[B, H] or null*/) {
  const int64_t B = a.B, H = a.H, P = a.P, G = a.G, DP = a.D * a.P;
  const SavedLayout& L = a.layout;
  constexpr bool with_c = Cell::kCellState;
  // dh, dc: gradient flowing into the state from later steps; dht: total dL/dh_t at this step;
  // dm: dL/dm with a projection; dgc: this step's dgh rows packed for the GEMM.
  std::vector<S> dh(B * P), dc(with_c ? B * H : 0), dht(B * P), dm(a.proj ? B * H : 0), dgc(B * G);
  for (int64_t j = 0; j < B; ++j) {
    std::copy_n(grad_hn + order[j] * P, P, &dh[j * P]);
    if (with_c) std::copy_n(grad_cn + order[j] * H, H, &dc[j * H]);
  }
  auto time = [&](int64_t b, int64_t s) { return dir.reverse ? len[b] - 1 - s : s; };
  const int64_t steps = B ? len[order[0]] : 0;
  int64_t n = 0;
  for (int64_t s = steps - 1; s >= 0; --s) {
    while (n < B && len[order[n]] > s) ++n;
    at::parallel_for(0, n, grain(P), [&](int64_t begin, int64_t end) {
      for (int64_t j = begin; j < end; ++j) {
        const int64_t b = order[j], t = time(b, s);
        const S* go = grad_out + (t * B + b) * DP + dir.d * P;
        for (int64_t p = 0; p < P; ++p) dht[j * P + p] = go[p] + dh[j * P + p];
        if (dH) std::copy_n(&dht[j * P], P, dH + row[t * B + b] * P);
      }
    });
    if (a.proj) gemm<S>(n, H, P, dht.data(), P, dir.w_hr, H, false, S(0), dm.data(), H);
    at::parallel_for(0, n, grain(H), [&](int64_t begin, int64_t end) {
      for (int64_t j = begin; j < end; ++j) {
        const int64_t b = order[j], t = time(b, s), r = row[t * B + b];
        const S* sv = saved + r * L.K;
        S* dgr = &dgc[j * G];
        cells_backward<Cell, S>(H, sv + L.act, sv + L.prev, a.proj ? &dm[j * H] : &dht[j * P],
                                with_c ? &dc[j * H] : nullptr, dgx + r * G, dgr, &dh[j * P]);
        std::copy_n(dgr, G, dgh + r * G);  // dgh is dgx unless the cell keeps b_hh apart
      }
    });
    // dL/dh_{t-1} = dgh W_hh (+ the direct term that the cell left in dh)
    gemm<S>(n, P, G, dgc.data(), G, dir.w_hh, P, false, Cell::kDirect ? S(1) : S(0), dh.data(), P);
  }
  for (int64_t j = 0; j < B; ++j) {
    std::copy_n(&dh[j * P], P, dh0 + order[j] * P);
    if (with_c) std::copy_n(&dc[j * H], H, dc0 + order[j] * H);
  }
}

template <typename S>
Dir<S> direction(const LayerArgs& a, int64_t d, const at::Tensor& w_hh, const std::optional<at::Tensor>& b_hh,
                 const std::optional<at::Tensor>& w_hr) {
  return {d, d == 1, w_hh[d].data_ptr<S>(),
          (a.bias_apart && a.bias) ? (*b_hh)[d].data_ptr<S>() : nullptr,
          a.proj ? (*w_hr)[d].data_ptr<S>() : nullptr};
}

void check_cpu_dtype(const at::Tensor& x) {
  PACKEDRNN_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
                  "the CPU op takes float32 and float64, got x of dtype ", x.scalar_type());
}

at::Tensor token_index_cpu(const at::Tensor& lengths, int64_t T) {
  PACKEDRNN_CHECK(lengths.dim() == 1 && lengths.is_cpu(), "token_index takes lengths [B] on the CPU");
  check_host_lengths("lengths", lengths, lengths.numel(), T);
  return valid_positions(lengths.contiguous(), T, lengths.numel());
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> rnn_layer_cpu(
    int64_t cell, const at::Tensor& x_, const at::Tensor& lengths, const std::optional<at::Tensor>& tokens,
    const std::optional<at::Tensor>& host_lengths, const at::Tensor& h0_, const std::optional<at::Tensor>& c0_,
    const at::Tensor& w_ih, const at::Tensor& w_hh_, const std::optional<at::Tensor>& b_ih,
    const std::optional<at::Tensor>& b_hh_, const std::optional<at::Tensor>& w_hr_, bool train, int64_t path) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;  // internal ATen calls record no graph
  const LayerArgs a(cell, x_, lengths, tokens, host_lengths, h0_, c0_, w_ih, w_hh_, b_ih, b_hh_, w_hr_, path);
  check_cpu_dtype(x_);
  const at::Tensor x = x_.contiguous(), h0 = h0_.contiguous(), w_hh = w_hh_.contiguous();
  const auto c0 = contig(c0_), b_hh = contig(b_hh_), w_hr = contig(w_hr_);
  const at::Tensor len = lengths.contiguous();
  const int64_t* lp = len.data_ptr<int64_t>();
  const std::vector<int64_t> order = by_length(lp, a.B);
  const Tokens tk(tokens, lp, a.T, a.B);
  const at::Tensor gx = input_projection(a, x.view({a.T * a.B, a.I}).index_select(0, tk.index), w_ih, b_ih, b_hh_);
  const auto opt = x.options();
  at::Tensor out = at::zeros({a.T, a.B, a.D * a.P}, opt);
  at::Tensor h_n = at::empty({a.D, a.B, a.P}, opt);
  at::Tensor c_n = a.cell_state ? at::empty({a.D, a.B, a.H}, opt) : at::empty({0}, opt);
  // The token rows only, each written by the recurrence (csrc/ops.cpp: [D, N, K]).
  at::Tensor saved = train ? at::empty({a.D, tk.N, a.layout.K}, opt) : at::empty({0}, opt);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "packedrnn_rnn_layer_cpu", [&] {
    with_cell(a.cell, [&](auto cell) {
      for (int64_t d = 0; d < a.D; ++d) {
        forward_direction<decltype(cell), scalar_t>(
            a, direction<scalar_t>(a, d, w_hh, b_hh, w_hr), lp, order, tk.row.data(), gx[d].data_ptr<scalar_t>(),
            h0[d].data_ptr<scalar_t>(), c0 ? (*c0)[d].data_ptr<scalar_t>() : nullptr, out.data_ptr<scalar_t>(),
            h_n[d].data_ptr<scalar_t>(), a.cell_state ? c_n[d].data_ptr<scalar_t>() : nullptr,
            train ? saved[d].data_ptr<scalar_t>() : nullptr);
      }
    });
  });
  return {out, h_n, c_n, saved};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
rnn_layer_backward_cpu(int64_t cell, const at::Tensor& x_, const at::Tensor& lengths,
                       const std::optional<at::Tensor>& tokens, const std::optional<at::Tensor>& host_lengths,
                       const at::Tensor& h0, const std::optional<at::Tensor>& c0, const at::Tensor& w_ih_,
                       const at::Tensor& w_hh_,
                       const std::optional<at::Tensor>& b_ih, const std::optional<at::Tensor>& b_hh_,
                       const std::optional<at::Tensor>& w_hr_, const at::Tensor& saved_,
                       const at::Tensor& grad_out_, const at::Tensor& grad_hn_, const at::Tensor& grad_cn_,
                       int64_t path) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  const LayerArgs a(cell, x_, lengths, tokens, host_lengths, h0, c0, w_ih_, w_hh_, b_ih, b_hh_, w_hr_, path);
  check_cpu_dtype(x_);
  const SavedLayout& L = a.layout;
  const at::Tensor x = x_.contiguous(), w_ih = w_ih_.contiguous(), w_hh = w_hh_.contiguous();
  const at::Tensor saved = saved_.contiguous(), grad_out = grad_out_.contiguous();
  const at::Tensor grad_hn = grad_hn_.contiguous(), grad_cn = grad_cn_.contiguous();
  const auto b_hh = contig(b_hh_), w_hr = contig(w_hr_);
  const at::Tensor len = lengths.contiguous();
  const int64_t* lp = len.data_ptr<int64_t>();
  const std::vector<int64_t> order = by_length(lp, a.B);
  const Tokens tk(tokens, lp, a.T, a.B);
  a.check_backward(x, saved, tk.N, grad_out, grad_hn, grad_cn);
  const auto opt = x.options();
  at::Tensor dgx = at::empty({a.D, tk.N, a.G}, opt);  // every row is written by the recurrence
  at::Tensor dgh = a.bias_apart ? at::empty_like(dgx) : dgx;
  at::Tensor dH = a.proj ? at::empty({a.D, tk.N, a.P}, opt) : at::Tensor();
  at::Tensor dh0 = at::empty({a.D, a.B, a.P}, opt);
  at::Tensor dc0 = a.cell_state ? at::empty({a.D, a.B, a.H}, opt) : at::empty({0}, opt);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "packedrnn_rnn_layer_backward_cpu", [&] {
    with_cell(a.cell, [&](auto cell) {
      for (int64_t d = 0; d < a.D; ++d) {
        backward_direction<decltype(cell), scalar_t>(
            a, direction<scalar_t>(a, d, w_hh, b_hh, w_hr), lp, order, tk.row.data(), saved[d].data_ptr<scalar_t>(),
            grad_out.data_ptr<scalar_t>(), grad_hn[d].data_ptr<scalar_t>(),
            a.cell_state ? grad_cn[d].data_ptr<scalar_t>() : nullptr, dgx[d].data_ptr<scalar_t>(),
            dgh[d].data_ptr<scalar_t>(), a.proj ? dH[d].data_ptr<scalar_t>() : nullptr, dh0[d].data_ptr<scalar_t>(),
            a.cell_state ? dc0[d].data_ptr<scalar_t>() : nullptr);
      }
    });
  });
  const at::Tensor x_rows = x.view({a.T * a.B, a.I}).index_select(0, tk.index);
  const at::Tensor saved_rows = saved.view({a.D, tk.N, L.K});
  auto [dx_rows, dw_ih, dw_hh, db_ih, db_hh, dw_hr] = weight_and_input_grads(
      a, x_rows, w_ih, saved_rows.narrow(2, L.h_prev, a.P), a.proj ? saved_rows.narrow(2, L.m, a.H) : at::Tensor(),
      dgx, dgh, dH);
  at::Tensor dx = at::zeros({a.T * a.B, a.I}, opt).index_copy_(0, tk.index, dx_rows);
  return {dx.view({a.T, a.B, a.I}), dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, dw_hr};
}

}  // namespace

TORCH_LIBRARY_IMPL(packedrnn, CPU, m) {
  m.impl("token_index", &token_index_cpu);
  m.impl("rnn_layer", &rnn_layer_cpu);
  m.impl("rnn_layer_backward", &rnn_layer_backward_cpu);
}

}  // namespace packedrnn
