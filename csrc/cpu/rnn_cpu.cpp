// CPU implementation of packedrnn::rnn_layer and packedrnn::rnn_layer_backward (schemas and the
// shape legend: ops.cpp and cells.h).
//
// Algorithm, per layer call, in one parallel region (cpu/stages.h; docs/ARCHITECTURE.md, 4b):
//   1. The valid (t, b) positions are N = sum(lengths) token rows (time-major): no work on padding.
//      Rows are visited in order of decreasing length (a CPU-side argsort of `lengths`; the
//      caller's order is untouched), so at step s the active rows are the first n(s) of that order.
//   2. Stage 0 packs W_ih, W_hh (and W_hr) for the products (cpu/step_product.h) and gathers x's
//      token rows; stage 1 is gx = x W_ih^T over them (the cell adds the bias), and zeroes out's
//      padding; then every step is one stage (two with a projection) cut into chunks of
//      (direction, block of U hidden units, block of rows): a chunk computes its units' gates of
//      h_{t-1} W_hh^T for its rows and runs the cell update (its trait, cells/*.h) on them; t = s forward, or lengths[b]-1-s in
//      reverse. Both directions run in the same stages. Padded x is never read; finished rows are
//      never touched.
//   3. Backward walks the steps in reverse with the same active sets and chunks (cell backward per
//      unit block, then dL/dh_{t-1} = dgh W_hh per block of state columns), producing dgx/dgh per
//      token row; the weight and input gradients are then large GEMMs over the N rows (layer_gemms.h).
// Nothing is allocated per step: a call's buffers come from one workspace (Arena).
#include <ATen/ATen.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdlib>
#include <new>
#include <numeric>
#include <utility>
#include <vector>

#include "cells.h"
#include "cpu/stages.h"
#include "cpu/step_product.h"
#include "layer_args.h"
#include "layer_gemms.h"

namespace packedrnn {
namespace {

using cpu::Product;
using cpu::Source;

// Row indices sorted by decreasing length (stable, so ties keep the caller's order).
std::vector<int64_t> by_length(const int64_t* len, int64_t B) {
  std::vector<int64_t> order(B);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return len[a] > len[b]; });
  return order;
}

// The cell loops over units, as plain loops so that the compiler vectorizes them (the exp of
// cells.h is branch-free arithmetic here), built for AVX-512, AVX2 and the x86-64 baseline and
// picked when the library loads (GCC target_clones; elsewhere one build). Pointers are
// __restrict__: every array is a distinct buffer or a disjoint part of one saved row.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__GLIBC__)  // ifunc
#define PRNN_CPU_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define PRNN_CPU_CLONES
#endif

// Where one row of a chunk lives besides the chunk's own dense rows: its places in the buffers
// indexed by token row (gx, saved, the gate gradients) and in out/grad_out, all at the chunk's
// first unit.
template <typename S>
struct ForwardRow {
  const S* gx;  // the row's x projection, [NG][U]
  S* saved;     // its row of saved (null: inference)
  S* copy;      // a second home of the cell's output: out's row, or the saved m (null: none)
};
template <typename S>
struct BackwardRow {
  const S* saved;
  const S* go;  // grad_out's row (read without a projection)
  S* dgx;       // dL/d(x projection), gate stride H (written where it differs from dgh, kBiasApart)
  S* dgh;       // dL/d(h projection)
};

// The cell's forward over a chunk: `rows` rows of a block of n units (cells/*.h). Per row j: io[j]
// (its x W_ih^T, to which bx, the bias that folds into it, is added here), and with fixed strides
// gh + j*NG*U (the chunk's product h_{t-1} W_hh^T, gate stride U; bh = b_hh added where the cell
// keeps it apart; bias gate stride H), h_prev + j*sh, out + j*so (the new h, or m
// before a projection), c + j*H (cells with a cell state: c_{t-1} in, c_t out). Save: write the
// activations and c_{t-1} (and with SaveH h_{t-1}) into the saved row; Copy: the output into copy.
// One call per chunk, so that the constants of the cell's math are set up once; the unit loops
// have no branch inside (a conditional store keeps GCC from vectorizing).
template <typename Cell, bool Save, bool SaveH, bool Copy, typename S>
inline __attribute__((always_inline)) void cell_forward_row(int64_t n, int64_t H, int64_t U, const S* __restrict__ gx,
                                                            const S* __restrict__ bx, const S* __restrict__ gh,
                                                            const S* __restrict__ bh,
                                                            const S* __restrict__ h_prev, S* __restrict__ out,
                                                            S* __restrict__ c, S* __restrict__ act,
                                                            S* __restrict__ c_prev, S* __restrict__ h_save,
                                                            S* __restrict__ copy) {
  constexpr int NG = Cell::kGates;
  for (int64_t u = 0; u < n; ++u) {
    S x[NG], y[NG];
    for (int g = 0; g < NG; ++g) {
      x[g] = gx[g * U + u] + bx[g * H + u];
      y[g] = gh[g * U + u] + (Cell::kBiasApart ? bh[g * H + u] : S(0));
    }
    const S cp = Cell::kCellState ? c[u] : S(0);
    const auto r = Cell::forward(x, y, h_prev[u], cp);
    if (Save) {
      for (int k = 0; k < Cell::kAct; ++k) act[k * H + u] = r.act[k];
      if (Cell::kCellState) c_prev[u] = cp;
      if (SaveH) h_save[u] = h_prev[u];
    }
    if (Cell::kCellState) c[u] = r.c;
    out[u] = r.out;
    if (Copy) copy[u] = r.out;
  }
}
template <typename Cell, bool Save, bool SaveH, bool Copy, typename S>
inline __attribute__((always_inline)) void cells_forward_rows(int64_t rows, int64_t n, int64_t H, int64_t U,
                                                              const SavedLayout& L, const ForwardRow<S>* io,
                                                              const S* bx, const S* gh, const S* bh,
                                                              const S* h_prev, int64_t sh, S* out, int64_t so,
                                                              S* c) {
  for (int64_t j = 0; j < rows; ++j) {
    S* sv = io[j].saved;
    cell_forward_row<Cell, Save, SaveH, Copy>(
        n, H, U, io[j].gx, bx, gh + j * Cell::kGates * U, bh, h_prev + j * sh, out + j * so,
        Cell::kCellState ? c + j * H : nullptr, Save ? sv + L.act : nullptr,
        Save && Cell::kCellState ? sv + L.c_prev : nullptr, SaveH ? sv + L.h_prev : nullptr, io[j].copy);
  }
}
template <typename Cell, typename S>
PRNN_CPU_CLONES void cells_forward(bool save, bool proj, int64_t rows, int64_t n, int64_t H, int64_t U,
                                   const SavedLayout& L, const ForwardRow<S>* io, const S* bx, const S* gh,
                                   const S* bh, const S* h_prev, int64_t sh, S* out, int64_t so, S* c) {
  // Saving: the activations, h_{t-1} unless the projection's phase saves it, and m (copy) with a
  // projection. Without a projection the copy is out's row.
  if (save && proj) {
    cells_forward_rows<Cell, true, false, true>(rows, n, H, U, L, io, bx, gh, bh, h_prev, sh, out, so, c);
  } else if (save) {
    cells_forward_rows<Cell, true, true, true>(rows, n, H, U, L, io, bx, gh, bh, h_prev, sh, out, so, c);
  } else if (proj) {
    cells_forward_rows<Cell, false, false, false>(rows, n, H, U, L, io, bx, gh, bh, h_prev, sh, out, so, c);
  } else {
    cells_forward_rows<Cell, false, false, true>(rows, n, H, U, L, io, bx, gh, bh, h_prev, sh, out, so, c);
  }
}

// The cell's backward over a chunk: `rows` rows of a block of n units. Per row j: io[j] (the saved
// row, and where the gate gradients of the x and h projections go: dgx, and dgh where they differ
// (kBiasApart), gate stride H), and with fixed strides: dout = dL/d(the cell's output), from the
// projection's product (Proj: tile + j*U) or grad_out's row plus dh, the gradient from later steps;
// dc + j*H (in from t+1, out to t-1; cells with a cell state); dg + j*G, this step's dgh rows for
// the dh product; dh + j*P, which receives the direct part of dL/dh_{t-1} (cells with one).
template <typename Cell, bool Proj, typename S>
inline __attribute__((always_inline)) void cell_backward_row(int64_t n, int64_t H, const S* __restrict__ act,
                                                             const S* __restrict__ prev, const S* __restrict__ go,
                                                             const S* __restrict__ tile, S* __restrict__ dc,
                                                             S* __restrict__ dg, S* __restrict__ dh,
                                                             S* __restrict__ dx, S* __restrict__ dy) {
  constexpr int NG = Cell::kGates;
  for (int64_t u = 0; u < n; ++u) {
    S a[Cell::kAct];
    for (int k = 0; k < Cell::kAct; ++k) a[k] = act[k * H + u];
    const S dout = Proj ? tile[u] : go[u] + dh[u];
    const auto g = Cell::backward(a, prev[u], dout, Cell::kCellState ? dc[u] : S(0));
    for (int k = 0; k < NG; ++k) dg[k * H + u] = g.dh[k];
    if (Cell::kBiasApart) {
      for (int k = 0; k < NG; ++k) dx[k * H + u] = g.dx[k];
    }
    if (Cell::kCellState) dc[u] = g.dc_prev;
    if (Cell::kDirect) dh[u] = g.direct;
  }
  // A loop of its own: a third store per gate in the loop above keeps GCC from vectorizing it.
  for (int k = 0; k < NG; ++k)
    for (int64_t u = 0; u < n; ++u) dy[k * H + u] = dg[k * H + u];
}
template <typename Cell, bool Proj, typename S>
inline __attribute__((always_inline)) void cells_backward_rows(int64_t rows, int64_t n, int64_t H, int64_t G,
                                                               int64_t P, const SavedLayout& L,
                                                               const BackwardRow<S>* io, const S* tile, int64_t U,
                                                               S* dc, S* dg, S* dh) {
  for (int64_t j = 0; j < rows; ++j) {
    cell_backward_row<Cell, Proj>(n, H, io[j].saved + L.act, io[j].saved + L.prev, io[j].go, tile + j * U,
                                  Cell::kCellState ? dc + j * H : nullptr, dg + j * G, dh + j * P, io[j].dgx,
                                  io[j].dgh);
  }
}
template <typename Cell, typename S>
PRNN_CPU_CLONES void cells_backward(bool proj, int64_t rows, int64_t n, int64_t H, int64_t G, int64_t P,
                                    const SavedLayout& L, const BackwardRow<S>* io, const S* tile, int64_t U, S* dc,
                                    S* dg, S* dh) {
  if (proj) {
    cells_backward_rows<Cell, true>(rows, n, H, G, P, L, io, tile, U, dc, dg, dh);
  } else {
    cells_backward_rows<Cell, false>(rows, n, H, G, P, L, io, tile, U, dc, dg, dh);
  }
}

// Asks for the n values at p (their cache lines) into the L2 ahead of their use: a step's rows lie
// scattered over buffers written long before (gx, saved), out of the hardware prefetcher's sight,
// and a product runs meanwhile.
template <typename S>
inline void prefetch(const S* p, int64_t n) {
  const char* c = reinterpret_cast<const char*>(p);
  for (int64_t o = 0; o < n * int64_t(sizeof(S)); o += 64) __builtin_prefetch(c + o, 0, 2);
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


// The calling thread's kept block, reused from one call to the next. A fresh block would be paged
// in on every call: glibc gives large freed blocks back to the OS, and each 4 KB then costs a page
// fault and a zeroed page at first touch.
struct ThreadBlock {
  void* p = nullptr;
  int64_t size = 0;
  bool lent = false;  // an Arena of this thread holds it
  ~ThreadBlock() { std::free(p); }
  void* grow(int64_t bytes) {
    if (size < bytes) {
      std::free(p);
      size = (bytes + 63) / 64 * 64;
      p = std::aligned_alloc(64, size);
      if (p == nullptr) size = 0, throw std::bad_alloc();
    }
    return p;
  }
};
inline ThreadBlock& thread_block() {
  thread_local ThreadBlock block;
  return block;
}
// Up to this size a call's workspace is the thread's kept block; a larger one is the call's own,
// so that a large model does not hold its largest workspace between calls.
constexpr int64_t kKeptBytes = int64_t(64) << 20;

// A call's buffers, carved from one workspace: add() the parts, then allocate() once; the parts
// live as long as the Arena.
template <typename S>
class Arena {
 public:
  Arena() = default;
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;
  ~Arena() {
    if (kept_) thread_block().lent = false;
  }
  void add(S*& p, int64_t n) { parts_.emplace_back(&p, (n + 15) / 16 * 16); }  // 64-byte aligned parts
  void allocate() {
    int64_t total = 0;
    for (const auto& p : parts_) total += p.second;
    ThreadBlock& block = thread_block();
    S* next;
    if (total * int64_t(sizeof(S)) <= kKeptBytes && !block.lent) {
      next = static_cast<S*>(block.grow(total * sizeof(S)));
      block.lent = kept_ = true;
    } else {
      own_ = at::empty({total}, at::TensorOptions().dtype(c10::CppTypeToScalarType<S>::value));
      next = own_.data_ptr<S>();
    }
    for (const auto& p : parts_) *p.first = next, next += p.second;
  }

 private:
  std::vector<std::pair<S**, int64_t>> parts_;
  bool kept_ = false;
  at::Tensor own_;
};

// Rows between the caller's order and the by-length one: for each direction, dst[j] = src[order[j]]
// (to_sorted) or dst[order[j]] = src[j], `width` values per row.
template <typename S>
void reorder(const S* src, S* dst, const std::vector<int64_t>& order, int64_t D, int64_t width, bool to_sorted) {
  const int64_t B = order.size();
  for (int64_t d = 0; d < D; ++d) {
    for (int64_t j = 0; j < B; ++j) {
      const int64_t from = to_sorted ? order[j] : j, to = to_sorted ? j : order[j];
      std::copy_n(src + (d * B + from) * width, width, dst + (d * B + to) * width);
    }
  }
}

// How a layer call's recurrence is cut up, and on how many threads: every rule that picks the CPU
// recurrence's shape, in one place.
struct Geometry {
  int64_t D, U, steps, rows, workers;
  std::vector<int64_t> active;  // active[s]: rows with length > s, the first of the by-length order

  // `macs`: multiply-adds per row and step of the widest product, `unit_macs` those per unit block;
  // U and R: its unit block and rows per tile.
  Geometry(const LayerArgs& a, const int64_t* len, const std::vector<int64_t>& order, int64_t U_, int64_t R,
           int64_t unit_macs, int64_t macs)
      : D(a.D), U(U_) {
    steps = a.B ? len[order[0]] : 0;
    active.resize(steps);
    for (int64_t s = 0, n = a.B; s < steps; ++s) {
      while (n > 0 && len[order[n - 1]] <= s) --n;
      active[s] = n;
    }
    rows = rows_for(unit_macs, R);
    // A worker per 2^15 multiply-adds of the first step (about 2 us): below that, a stage's
    // hand-over between cores (some 100 ns) costs more than the second core saves.
    const int64_t work = D * a.B * macs;
    workers = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), work >> 15));
  }
  // Rows per chunk: about 2^18 multiply-adds (some microseconds), so that claiming a chunk costs
  // little beside it, yet a descheduled worker holds little; a multiple of the tile's R rows.
  static int64_t rows_for(int64_t unit_macs, int64_t R) {
    const int64_t rows = std::max<int64_t>(8, (int64_t(1) << 18) / std::max<int64_t>(1, unit_macs));
    return (rows + R - 1) / R * R;
  }
  int64_t row_blocks(int64_t s) const { return (active[s] + rows - 1) / rows; }
  int64_t units(int64_t width) const { return (width + U - 1) / U; }  // blocks of U over `width`

  // Chunk c of a step stage with `blocks` column blocks per direction.
  struct Chunk {
    int64_t d, block, r0, r1;
  };
  Chunk chunk(int64_t c, int64_t blocks, int64_t s) const {
    const int64_t nrb = row_blocks(s), per_dir = blocks * nrb, rest = c % per_dir;
    const int64_t r0 = (rest % nrb) * rows;
    return {c / per_dir, rest / nrb, r0, std::min(active[s], r0 + rows)};
  }
  int64_t chunks(int64_t blocks, int64_t s) const { return D * blocks * row_blocks(s); }
};

// Pointers of one direction, all contiguous. Shapes as in ops.cpp, with d fixed.
template <typename S>
struct Dir {
  bool reverse;
  const S* w_ih;  // [G, I]
  const S* b_x;   // [G], the bias added to x W_ih^T (b_ih, plus b_hh where it folds in); may be null
  const S* w_hh;  // [G, P]
  const S* b_hh;  // [G], cells that keep it apart (GRU; the others fold it into gx); may be null
  const S* w_hr;  // [P, H] or null
  // The time of row b's step s (steps count from each row's own first step in this direction).
  int64_t time(const int64_t* len, int64_t b, int64_t s) const { return reverse ? len[b] - 1 - s : s; }
};

// The forward of one layer, both directions: x [T, B, I] (read at the token rows' positions,
// `index`); per direction d: h0 [B, P], c0 [B, H] (or null), out [T, B, D*P] (uninitialised on
// entry: zeroed at padding here), h_n [B, P], c_n [B, H] (or null), saved [N, K] (or null:
// inference keeps nothing).
template <typename Cell, typename S>
void forward_layer(const LayerArgs& a, const std::vector<Dir<S>>& dirs, const int64_t* len,
                   const std::vector<int64_t>& order, const int64_t* row, const int64_t* index, int64_t N,
                   const S* x, const S* h0,
                   const S* c0, S* out, S* h_n, S* c_n, S* saved) {
  constexpr int NG = Cell::kGates;
  constexpr bool with_c = Cell::kCellState;
  const int64_t B = a.B, H = a.H, P = a.P, G = a.G, D = a.D, I = a.I, DP = D * P;
  const SavedLayout& L = a.layout;
  const Product<S, NG> gates;  // x W_ih^T and h_{t-1} W_hh^T, per unit block
  const Product<S, 1> single;  // m W_hr^T, per block of state columns
  const int64_t U = gates.U;
  const Geometry geo(a, len, order, U, gates.R, P * NG * U, P * G + (a.proj ? H * P : 0));
  const int64_t ub = geo.units(H), pb = a.proj ? geo.units(P) : 0;
  const int64_t xrows = Geometry::rows_for(I * NG * U, gates.R), xblocks = (N + xrows - 1) / xrows;

  // gx: x W_ih^T per unit block, [D][ub][N][NG][U]: a chunk of the input projection writes its tile
  // in place, and a step's chunk reads its rows' gates from one place (and adds the bias).
  S *w_ih, *w_hh, *w_hr = nullptr, *xr, *gx, *h, *c = nullptr, *m = nullptr, *scratch, *zeros = nullptr;
  Arena<S> arena;
  arena.add(w_ih, D * ub * I * NG * U);  // [D][ub][I][NG][U]
  arena.add(xr, N * I);                  // x's token rows, gathered once for every unit block
  arena.add(w_hh, D * ub * P * NG * U);  // [D][ub][P][NG][U]
  if (a.proj) arena.add(w_hr, D * pb * H * U), arena.add(m, D * B * H);  // [D][pb][H][U]; m [D, B, H]
  arena.add(gx, D * ub * N * NG * U);
  arena.add(h, 2 * D * B * P);  // [2][D, B, P]: h_{t-1} and h_t, by parity of the step
  if (with_c) arena.add(c, D * B * H);
  const int64_t tile_size = geo.rows * NG * U;  // a step's gates
  arena.add(scratch, geo.workers * tile_size);
  arena.add(zeros, G);
  arena.allocate();
  std::vector<ForwardRow<S>> ios(geo.workers * geo.rows);  // per worker: its chunk's rows
  // The biases the cell adds to x W_ih^T and (kBiasApart) h_{t-1} W_hh^T; zeros where there are none.
  std::fill_n(zeros, G, S(0));
  std::vector<const S*> b_x(D), b_hh(D);
  for (int64_t d = 0; d < D; ++d) {
    b_x[d] = dirs[d].b_x ? dirs[d].b_x : zeros;
    b_hh[d] = dirs[d].b_hh ? dirs[d].b_hh : zeros;
  }
  reorder(h0, h, order, D, P, true);
  if (with_c) reorder(c0, c, order, D, H, true);
  auto time = [&](int64_t d, int64_t b, int64_t s) { return dirs[d].time(len, b, s); };
  const int64_t phases = a.proj ? 2 : 1;

  // Stages: 0 packs the weights and gathers x's rows, 1 is the input projection, then each step
  // (2 + s*phases + phase).
  const int64_t packs = D * (2 * ub + pb);
  auto count = [&](int64_t k) {
    if (k == 0) return packs + xblocks;
    if (k == 1) return D * ub * xblocks + B;  // and one chunk per batch row: out's padding
    const int64_t s = (k - 2) / phases;
    return geo.chunks((k - 2) % phases ? pb : ub, s);
  };
  auto work = [&](int64_t k, int64_t ci, int64_t w) {
    if (k == 0 && ci >= packs) {  // gather one block of token rows
      const int64_t r0 = (ci - packs) * xrows;
      for (int64_t r = r0; r < std::min(N, r0 + xrows); ++r) std::copy_n(x + index[r] * I, I, xr + r * I);
      return;
    }
    if (k == 0) {  // pack one block of one direction's weights
      const int64_t d = ci / (2 * ub + pb), b = ci % (2 * ub + pb);
      if (b < ub) {
        cpu::pack_block<S>({dirs[d].w_ih, I, 1}, NG, H, I, U, b, w_ih + (d * ub + b) * I * NG * U);
      } else if (b < 2 * ub) {
        cpu::pack_block<S>({dirs[d].w_hh, P, 1}, NG, H, P, U, b - ub, w_hh + (d * ub + b - ub) * P * NG * U);
      } else {
        cpu::pack_block<S>({dirs[d].w_hr, H, 1}, 1, P, H, U, b - 2 * ub, w_hr + (d * pb + b - 2 * ub) * H * U);
      }
      return;
    }
    if (k == 1) {  // gx for one block of token rows and units (the cell adds the bias)
      if (ci >= D * ub * xblocks) {  // zero out[t, b] past b's length (nothing else writes there)
        const int64_t b = ci - D * ub * xblocks;
        for (int64_t t = len[b]; t < a.T; ++t) std::fill_n(out + (t * B + b) * DP, DP, S(0));
        return;
      }
      const int64_t d = ci / (ub * xblocks), blk = ci % (ub * xblocks) / xblocks, r0 = ci % xblocks * xrows;
      const int64_t n = std::min(N, r0 + xrows) - r0;
      S* y = gx + ((d * ub + blk) * N + r0) * NG * U;
      gates(n, I, xr + r0 * I, I, w_ih + (d * ub + blk) * I * NG * U, y);
      return;
    }
    const int64_t s = (k - 2) / phases;
    const bool project = (k - 2) % phases == 1;
    const auto ch = geo.chunk(ci, project ? pb : ub, s);
    const int64_t d = ch.d, n = ch.r1 - ch.r0, u0 = ch.block * U, nu = std::min(U, (project ? P : H) - u0);
    const S* hc = h + ((s % 2) * D + d) * B * P;  // h_{t-1}
    S* hn = h + (((s + 1) % 2) * D + d) * B * P;  // h_t
    S* tile = scratch + w * tile_size;
    if (project) {  // h_t = m W_hr^T for this block of state columns
      single(n, H, m + (d * B + ch.r0) * H, H, w_hr + (d * pb + ch.block) * H * U, tile);
      for (int64_t j = ch.r0; j < ch.r1; ++j) {
        const int64_t b = order[j], t = time(d, b, s);
        const S* y = tile + (j - ch.r0) * U;
        if (saved) std::copy_n(hc + j * P + u0, nu, saved + (d * N + row[t * B + b]) * L.K + L.h_prev + u0);
        std::copy_n(y, nu, hn + j * P + u0);
        std::copy_n(y, nu, out + (t * B + b) * DP + d * P + u0);
      }
      return;
    }
    const S* gxb = gx + (d * ub + ch.block) * N * NG * U;  // this block's gx, by token row
    ForwardRow<S>* io = ios.data() + w * geo.rows;
    for (int64_t j = ch.r0; j < ch.r1; ++j) {  // the rows' places, and their gx asked for early
      const int64_t b = order[j], t = time(d, b, s), r = row[t * B + b];
      ForwardRow<S>& e = io[j - ch.r0];
      e.gx = gxb + r * NG * U;
      e.saved = saved ? saved + (d * N + r) * L.K + u0 : nullptr;
      e.copy = a.proj ? (saved ? e.saved + L.m : nullptr) : out + (t * B + b) * DP + d * P + u0;
      prefetch(e.gx, NG * U);
    }
    gates(n, P, hc + ch.r0 * P, P, w_hh + (d * ub + ch.block) * P * NG * U, tile);
    // With a projection the cell's output is m (a projecting cell, LSTM, reads no h_{t-1}).
    cells_forward<Cell, S>(saved != nullptr, a.proj, n, nu, H, U, L, io, b_x[d] + u0, tile, b_hh[d] + u0,
                           hc + ch.r0 * P + u0, P,
                           a.proj ? m + (d * B + ch.r0) * H + u0 : hn + ch.r0 * P + u0, a.proj ? H : P,
                           with_c ? c + (d * B + ch.r0) * H + u0 : nullptr);
  };
  cpu::run_stages(geo.workers, 2 + geo.steps * phases, count, work);

  for (int64_t d = 0; d < D; ++d) {
    for (int64_t j = 0; j < B; ++j) {  // a row's last h is in the buffer of its length's parity
      const int64_t b = order[j];
      std::copy_n(h + ((len[b] % 2) * D + d) * B * P + j * P, P, h_n + (d * B + b) * P);
    }
  }
  if (with_c) reorder<S>(c, c_n, order, D, H, false);
}

// The backward of one layer, both directions. Per direction d: saved [N, K], grad_out [T, B, D*P],
// grad_hn [B, P], grad_cn [B, H] (or null); out: dgx [N, G], dgh [N, G] (== dgx unless the cell
// keeps b_hh apart), dH [N, P] (with a projection, else null), dh0 [B, P], dc0 [B, H] (or null).
template <typename Cell, typename S>
void backward_layer(const LayerArgs& a, const std::vector<Dir<S>>& dirs, const int64_t* len,
                    const std::vector<int64_t>& order, const int64_t* row, int64_t N, const S* saved,
                    const S* grad_out, const S* grad_hn, const S* grad_cn, S* dgx, S* dgh, S* dH, S* dh0, S* dc0) {
  constexpr bool with_c = Cell::kCellState;
  const int64_t B = a.B, H = a.H, P = a.P, G = a.G, D = a.D, DP = D * P;
  const SavedLayout& L = a.layout;
  const Product<S, 1> single;  // dgh W_hh and dht W_hr, per block of output columns
  const int64_t U = single.U;
  const Geometry geo(a, len, order, U, single.R, G * U, G * P + (a.proj ? H * P : 0));
  const int64_t ub = geo.units(H), pb = geo.units(P);

  // dh: dL/dh from later steps (in phase B also the cell's direct term); dc: dL/dc; dgc: this
  // step's dgh rows; dht: dL/dh_t with a projection (its product needs whole rows).
  S *w_hh, *w_hr = nullptr, *dh, *dc = nullptr, *dgc, *dht = nullptr, *scratch;
  Arena<S> arena;
  arena.add(w_hh, D * pb * G * U);  // W_hh as [D][pb][G][U]: dh = dgh W_hh per block of P
  if (a.proj) arena.add(w_hr, D * ub * P * U), arena.add(dht, D * B * P);  // W_hr as [D][ub][P][U]
  arena.add(dh, D * B * P);
  if (with_c) arena.add(dc, D * B * H);
  arena.add(dgc, D * B * G);
  arena.add(scratch, geo.workers * geo.rows * U);
  arena.allocate();
  std::vector<BackwardRow<S>> ios(geo.workers * geo.rows);  // per worker: its chunk's rows
  reorder(grad_hn, dh, order, D, P, true);
  if (with_c) reorder(grad_cn, dc, order, D, H, true);
  auto time = [&](int64_t d, int64_t b, int64_t s) { return dirs[d].time(len, b, s); };
  // Phases per step: [dL/dh_t with a projection, per block of P], the cell's backward per unit
  // block, dL/dh_{t-1} = dgh W_hh (+ the direct term) per block of P.
  const int64_t phases = a.proj ? 3 : 2, first = a.proj ? 0 : 1;
  auto count = [&](int64_t k) {
    if (k == 0) return D * (pb + (a.proj ? ub : 0));
    const int64_t s = geo.steps - 1 - (k - 1) / phases, phase = first + (k - 1) % phases;
    return geo.chunks(phase == 1 ? ub : pb, s);
  };
  auto work = [&](int64_t k, int64_t ci, int64_t w) {
    if (k == 0) {
      const int64_t per = pb + (a.proj ? ub : 0), d = ci / per, b = ci % per;
      if (b < pb) {
        cpu::pack_block<S>({dirs[d].w_hh, 1, P}, 1, P, G, U, b, w_hh + (d * pb + b) * G * U);
      } else {
        cpu::pack_block<S>({dirs[d].w_hr, 1, H}, 1, H, P, U, b - pb, w_hr + (d * ub + b - pb) * P * U);
      }
      return;
    }
    const int64_t s = geo.steps - 1 - (k - 1) / phases, phase = first + (k - 1) % phases;
    const auto ch = geo.chunk(ci, phase == 1 ? ub : pb, s);
    const int64_t d = ch.d, n = ch.r1 - ch.r0, u0 = ch.block * U, nu = std::min(U, (phase == 1 ? H : P) - u0);
    S* dhd = dh + d * B * P;
    S* tile = scratch + w * geo.rows * U;
    if (phase == 0) {  // dL/dh_t of the projection's output
      for (int64_t j = ch.r0; j < ch.r1; ++j) {
        const int64_t b = order[j], t = time(d, b, s);
        const S* go = grad_out + (t * B + b) * DP + d * P + u0;
        S* y = dht + (d * B + j) * P + u0;
        for (int64_t p = 0; p < nu; ++p) y[p] = go[p] + dhd[j * P + u0 + p];
        std::copy_n(y, nu, dH + (d * N + row[t * B + b]) * P + u0);
      }
    } else if (phase == 1) {  // the cell's backward for this unit block
      if (a.proj) single(n, P, dht + (d * B + ch.r0) * P, P, w_hr + (d * ub + ch.block) * P * U, tile);
      BackwardRow<S>* io = ios.data() + w * geo.rows;
      for (int64_t j = ch.r0; j < ch.r1; ++j) {
        const int64_t b = order[j], t = time(d, b, s), r = row[t * B + b];
        BackwardRow<S>& e = io[j - ch.r0];
        e.saved = saved + (d * N + r) * L.K + u0;
        e.go = grad_out + (t * B + b) * DP + d * P + u0;
        e.dgx = dgx + (d * N + r) * G + u0;
        e.dgh = dgh + (d * N + r) * G + u0;
      }
      cells_backward<Cell, S>(a.proj, n, nu, H, G, P, L, io, tile, U, with_c ? dc + (d * B + ch.r0) * H + u0 : nullptr,
                              dgc + (d * B + ch.r0) * G + u0, dhd + ch.r0 * P + u0);
    } else {  // dL/dh_{t-1} = dgh W_hh, plus the direct term the cell left in dh
      if (s > 0 && ch.block < ub) {  // prefetch what unit block `block` reads at the step before
        for (int64_t j = ch.r0; j < ch.r1; ++j) {
          const int64_t b = order[j], t = time(d, b, s - 1);
          const S* sv = saved + (d * N + row[t * B + b]) * L.K;
          for (int k = 0; k < Cell::kAct; ++k) prefetch(sv + L.act + k * H + u0, U);
          prefetch(sv + L.prev + u0, U);
          prefetch(grad_out + (t * B + b) * DP + d * P + u0, U);
        }
      }
      single(n, G, dgc + (d * B + ch.r0) * G, G, w_hh + (d * pb + ch.block) * G * U, tile);
      for (int64_t j = ch.r0; j < ch.r1; ++j) {
        const S* y = tile + (j - ch.r0) * U;
        S* o = dhd + j * P + u0;
        for (int64_t p = 0; p < nu; ++p) o[p] = Cell::kDirect ? y[p] + o[p] : y[p];
      }
    }
  };
  cpu::run_stages(geo.workers, 1 + geo.steps * phases, count, work);

  reorder<S>(dh, dh0, order, D, P, false);
  if (with_c) reorder<S>(dc, dc0, order, D, H, false);
}

// bias_x: [D, G] or undefined (no bias), the bias of x W_ih^T (layer_gemms.h's rule).
template <typename S>
std::vector<Dir<S>> directions(const LayerArgs& a, const at::Tensor& w_ih, const at::Tensor& bias_x,
                               const at::Tensor& w_hh, const std::optional<at::Tensor>& b_hh,
                               const std::optional<at::Tensor>& w_hr) {
  std::vector<Dir<S>> dirs;
  for (int64_t d = 0; d < a.D; ++d) {
    dirs.push_back({d == 1, w_ih[d].data_ptr<S>(), bias_x.defined() ? bias_x[d].data_ptr<S>() : nullptr,
                    w_hh[d].data_ptr<S>(), (a.bias_apart && a.bias) ? (*b_hh)[d].data_ptr<S>() : nullptr,
                    a.proj ? (*w_hr)[d].data_ptr<S>() : nullptr});
  }
  return dirs;
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
    const at::Tensor& w_ih_, const at::Tensor& w_hh_, const std::optional<at::Tensor>& b_ih,
    const std::optional<at::Tensor>& b_hh_, const std::optional<at::Tensor>& w_hr_, bool train, int64_t path) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;  // internal ATen calls record no graph
  const LayerArgs a(cell, x_, lengths, tokens, host_lengths, h0_, c0_, w_ih_, w_hh_, b_ih, b_hh_, w_hr_, path);
  check_cpu_dtype(x_);
  const at::Tensor x = x_.contiguous(), h0 = h0_.contiguous(), w_ih = w_ih_.contiguous(), w_hh = w_hh_.contiguous();
  const auto c0 = contig(c0_), b_hh = contig(b_hh_), w_hr = contig(w_hr_);
  const at::Tensor len = lengths.contiguous();
  const int64_t* lp = len.data_ptr<int64_t>();
  const std::vector<int64_t> order = by_length(lp, a.B);
  const Tokens tk(tokens, lp, a.T, a.B);
  const at::Tensor bias_x = input_bias(a, b_ih, b_hh_);
  const auto opt = x.options();
  at::Tensor out = at::empty({a.T, a.B, a.D * a.P}, opt);
  at::Tensor h_n = at::empty({a.D, a.B, a.P}, opt);
  at::Tensor c_n = a.cell_state ? at::empty({a.D, a.B, a.H}, opt) : at::empty({0}, opt);
  // The token rows only, each written by the recurrence (csrc/ops.cpp: [D, N, K]).
  at::Tensor saved = train ? at::empty({a.D, tk.N, a.layout.K}, opt) : at::empty({0}, opt);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "packedrnn_rnn_layer_cpu", [&] {
    with_cell(a.cell, [&](auto cell) {
      forward_layer<decltype(cell), scalar_t>(
          a, directions<scalar_t>(a, w_ih, bias_x, w_hh, b_hh, w_hr), lp, order, tk.row.data(),
          tk.index.data_ptr<int64_t>(), tk.N, x.data_ptr<scalar_t>(),
          h0.data_ptr<scalar_t>(), c0 ? c0->data_ptr<scalar_t>() : nullptr, out.data_ptr<scalar_t>(),
          h_n.data_ptr<scalar_t>(), a.cell_state ? c_n.data_ptr<scalar_t>() : nullptr,
          train ? saved.data_ptr<scalar_t>() : nullptr);
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
      backward_layer<decltype(cell), scalar_t>(
          a, directions<scalar_t>(a, w_ih, at::Tensor(), w_hh, b_hh, w_hr), lp, order, tk.row.data(), tk.N,
          saved.data_ptr<scalar_t>(),
          grad_out.data_ptr<scalar_t>(), grad_hn.data_ptr<scalar_t>(),
          a.cell_state ? grad_cn.data_ptr<scalar_t>() : nullptr, dgx.data_ptr<scalar_t>(), dgh.data_ptr<scalar_t>(),
          a.proj ? dH.data_ptr<scalar_t>() : nullptr, dh0.data_ptr<scalar_t>(),
          a.cell_state ? dc0.data_ptr<scalar_t>() : nullptr);
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
