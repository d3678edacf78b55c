// Persistent backward recurrence, reduce form: the fp32 backward (reduce_plan says where), beside
// the staged form of persistent_backward.cuh. Design and shared pieces: persistent.cuh.
//
// The staged form has every block read all gate gradients (G values per row) of the next step
// to form dL/dh_{t-1} for its own units. Here each block multiplies its own units' gate gradients
// by its own rows of W_hh (the forward's slice) into a partial dL/dh_{t-1} over all P, writes it,
// and after the grid barrier sums, for its own units, the partials of every block of its
// direction. Per block and step that is B*P values written and (blocks per direction)*B*Hb read,
// against B*G read: 2-4x less traffic through L2, where the staged form spends most of a step at
// B >= 64. Nothing is staged, so a chunk holds 512 / Hb rows at any H (the staged form fits 5
// rows at H = 1024 in fp32). The product runs on FFMA for every type, which is why the staged
// form, on tensor cores, keeps bf16/fp16.
//
// Shapes (legend in cells.h): Ws [JT][ld] S, row j = g*Hb + uu: W_hh[g*H + u0 + uu][0..P) (as the
// forward's); Y [NC][JT] float: the chunk's own gate gradients by row (dgh[r][g*Hb + uu]);
// part [2][D][blocks per direction][B][P] float: the partials, by the parity of the step.
#include "persistent.cuh"

namespace packedrnn {
namespace persistent {
namespace {

// sums[i] = the sum over the blocks beta < per_dir of the direction of their partial dL/dh for pair
// i < np * Hb of the chunk (rank r0 + i / Hb, unit u0 + i % Hb); in [per_dir][B][P], written
// before the last grid barrier. With every thread: `split` threads per pair (as many as the pairs
// leave, up to 32) each add every split-th block's partial, four loads in flight, then one thread
// adds their results in a fixed order (bitwise repeatable). At B = 8, one thread per pair adding
// all 128 partials in turn took 4.4 us per step with the cell (RESULTS.md). scratch: kThreads
// floats. Ends past a __syncthreads.
__device__ void sum_partials(const float* in, int per_dir, int64_t B, int64_t P, int64_t H, const int* order,
                             int r0, int np, int Hb, int64_t u0, float* scratch, float* sums) {
  const int pairs = np * Hb;
  int split = 1;
  while (split < 32 && 2 * split * pairs <= kThreads) split *= 2;
  const int width = kThreads / split, part = threadIdx.x / width, lane = threadIdx.x % width;
  for (int i0 = 0; i0 < pairs; i0 += width) {
    const int i = i0 + lane;
    float a[4] = {0.f, 0.f, 0.f, 0.f};
    if (i < pairs && u0 + i % Hb < H) {
      const float* src = in + (int64_t)order[r0 + i / Hb] * P + u0 + i % Hb;
      const int64_t stride = B * P;  // between the partials of consecutive blocks
      int beta = part;
      for (; beta + 3 * split < per_dir; beta += 4 * split) {
#pragma unroll
        for (int j = 0; j < 4; ++j) a[j] += __ldcg(src + (beta + j * split) * stride);
      }
      for (; beta < per_dir; beta += split) a[0] += __ldcg(src + beta * stride);
    }
    scratch[threadIdx.x] = (a[0] + a[1]) + (a[2] + a[3]);
    __syncthreads();
    if (part == 0 && i < pairs) {
      float v = 0.f;
      for (int k = 0; k < split; ++k) v += scratch[k * width + lane];
      sums[i] = v;
    }
    __syncthreads();
  }
}

template <typename S, typename Cell, int JT>
__global__ void __launch_bounds__(kThreads, 1) persistent_backward_reduce(BackwardParams p, Plan q) {
  using A = float;
  constexpr int NG = Cell::kGates;
  PACKEDRNN_SHARED_BYTES(smem_raw);
  cg::grid_group grid = cg::this_grid();
  const int64_t B = p.B, H = p.H, P = p.P, DP = p.D * P;
  const Smem<S> sm(smem_raw, q, B);
  const Slice sl(p.D, q.Hb);
  const int64_t d = sl.d, u0 = sl.u0;
  const int Hb = q.Hb, per_dir = gridDim.x / (int)p.D, self = blockIdx.x % per_dir;
  fill_gate_rows<S, NG>(q.rec, sm.Ws, p, d, Hb, u0);
  // Y's entries of gate rows past NG*Hb and of units past H are never written: zero, as the rows of
  // Ws they meet.
  for (int i = threadIdx.x; i < JT * q.NC; i += kThreads) sm.Y[i] = 0.f;
  sort_rows(p.lengths, B, p.T, sm.order, sm.lens, sm.tmp);  // ends with __syncthreads
  A* dh = static_cast<A*>(p.dh) + d * B * P;          // in: grad h_n; out: grad h0 (the block's units)
  const A* direct = static_cast<const A*>(p.direct) + d * B * H;  // the cell's direct term, per row
  const int64_t parity = p.D * per_dir * B * P;       // distance between the two partial buffers
  float* part = static_cast<float*>(p.part) + d * per_dir * B * P;
  const int64_t steps = sm.lens[0];
  // The chunk's sums of partials, and sum_partials' scratch, in `red` (block_gemm's, unused here).
  static_assert(kThreads + kItems * kThreads <= kWarps * 8 * kTile, "red holds both");
  float* const scratch = sm.red;
  float* const sums = sm.red + kThreads;
  PhaseClock clock;  // "stage": summing the partials (nothing is staged)
  // Step s = -1 is the extra pass that turns the partials of step 0 into grad h0.
  for (int64_t s = steps - 1; s >= -1; --s) {
    const int n_here = active_after(sm.lens, (int)B, s);      // rows active at step s
    const int n_next = active_after(sm.lens, n_here, s + 1);  // of those, rows with a step s+1
    const int n = s >= 0 ? n_here : n_next;
    const float* in = part + ((s + 1) & 1) * parity;  // written at step s+1
    float* out = part + (s & 1) * parity;
    for (int r0 = 0; r0 < n; r0 += q.NC) {
      const int nc = min(q.NC, n - r0), np = max(0, min(nc, n_next - r0));  // np rows have partials
      const Chunk ch{r0, nc, Hb, u0, d, s, B, sm.order, sm.lens};
      if (np > 0) sum_partials(in, per_dir, B, P, H, sm.order, r0, np, Hb, u0, scratch, sums);
      clock.mark(0);
#pragma unroll
      for (int k = 0; k < kItems; ++k) {
        const Pair m = ch.pair(k, H);
        if (!m.on) continue;
        const int64_t u = m.u;
        A carry;  // dL/dh_t from the step after (rows that have one), else grad h_n
        if (m.r < np) {
          carry = (Cell::kDirect ? direct[m.b * H + u] : A(0)) + sums[m.r * Hb + m.uu];
        } else {
          carry = dh[m.b * P + u];
        }
        if (s < 0) {  // the extra pass: the carry is grad h0
          dh[m.b * P + u] = carry;
          continue;
        }
        float v[7], gh[NG];
        load_cell<S, Cell>(p, d, m, v);
        const A dht = to_acc(static_cast<const S*>(p.grad_out)[m.row * DP + d * P + u]) + carry;
        cell_backward<S, Cell>(p, d, m, v, dht, gh);
#pragma unroll
        for (int g = 0; g < NG; ++g) sm.Y[m.r * JT + g * Hb + m.uu] = gh[g];  // row r, gate row g*Hb + uu
      }
      if (s < 0) continue;
      __syncthreads();
      clock.mark(2);
      // The partials of this block: out[self][b][k] = sum_j Y[r][j] Ws[j][k] for each column k, its
      // JT values of Ws held in registers across the rows; Y rows are read by every thread at once.
      for (int k = threadIdx.x; k < P; k += kThreads) {
        float wk[JT];
#pragma unroll
        for (int j = 0; j < JT; ++j) wk[j] = to_acc(sm.Ws[j * q.rec.ld + k]);
        for (int r = 0; r < nc; ++r) {
          const float* yr = sm.Y + r * JT;
          float acc = 0.f;
#pragma unroll
          for (int j = 0; j < JT; ++j) acc = fmaf(yr[j], wk[j], acc);
          out[(self * B + sm.order[r0 + r]) * P + k] = acc;
        }
      }
      __syncthreads();  // Y is reused by the next chunk
      clock.mark(1);
    }
    if (s >= 0) grid.sync();
    clock.mark(3);
  }
  clock.report("backward (reduce)", steps + 1);
}

// The plan of the reduce form where it takes the call (rules.h), else an empty one: at most 8
// units per block.
template <typename S, typename Cell>
Plan reduce_plan(const BackwardParams& p) {
  constexpr int NG = Cell::kGates;
  if (!reduce_wanted(p.tuning, std::is_same<S, float>::value, Cell::kProjection && p.proj)) return {};
  const Plan q = plan_for<S>(p, NG, p.P, 0, /*staged=*/false);
  if (q.Hb == 0 || q.rec.JT > 32 || !reduce_fits(p.tuning, q.blocks, p.P, p.D, p.T, NG * p.H)) return {};
  return q;
}

template <typename S, typename Cell>
cudaError_t reduce_dispatch(const BackwardParams& p, cudaStream_t stream) {
  if constexpr (sizeof(S) == 8 || !persistent_takes<Cell>()) {
    return cudaErrorNotSupported;
  } else {
    if ((Cell::kDirect && p.direct == nullptr) || p.part == nullptr) return cudaErrorNotSupported;
    const Plan q = reduce_plan<S, Cell>(p);
    return with_width<4, 8, 16, 32>(q.Hb ? q.rec.JT : 0, [&](auto jt) {
      constexpr int J = decltype(jt)::value;
      return cooperative(persistent_backward_reduce<S, Cell, J>, p, q, stream);
    });
  }
}

template <typename S, typename Cell>
int64_t partials_for(const BackwardParams& p, cudaStream_t) {
  if constexpr (sizeof(S) == 8 || !persistent_takes<Cell>()) {
    return 0;
  } else {
    const Plan q = reduce_plan<S, Cell>(p);
    return q.Hb ? 2 * (int64_t)q.blocks * p.B * p.P : 0;
  }
}

}  // namespace

cudaError_t backward_reduce(const BackwardParams& p, DType dtype, cudaStream_t stream) {
  PACKEDRNN_DISPATCH(reduce_dispatch, p, dtype, stream)
}

}  // namespace persistent

int64_t rnn_backward_persistent_partials(const BackwardParams& p, DType dtype) {
  cudaStream_t none = nullptr;
  return dispatch(p.cell, dtype, int64_t(0), [&](auto s, auto c) {
    return persistent::partials_for<decltype(s), decltype(c)>(p, none);
  });
}

}  // namespace packedrnn
