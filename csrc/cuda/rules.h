// Every rule that picks a CUDA path, in one place: which recurrence a layer runs, and, inside the
// persistent kernels, how h passes between blocks, which form the backward takes and how rows are
// staged. Pure functions of sizes, the device and the caller's Tuning. Nothing in csrc/ reads the
// environment: a developer's choices (packedrnn.tuning, or PACKEDRNN_RECURRENCE, read by
// packedrnn/plan.py) reach the op as its `path` argument, decoded here. Framework-free, for the
// .cu files and the torch glue alike.
#pragma once

#include <stdint.h>

namespace packedrnn {

enum class Recurrence : int { automatic = 0, persistent = 1, step = 2, gemm = 3 };
enum class Exchange : int { automatic = 0, tagged = 1, barrier = 2 };
enum class BackwardForm : int { automatic = 0, staged = 1, reduce = 2 };

// The caller's choices; automatic everywhere unless a developer forces a path. A forced recurrence
// that cannot take a call is an error, never a silent fallback (tests rely on knowing what ran).
// Encoded in the op's `path` as recurrence | exchange << 2 | backward << 4 (packedrnn/plan.py).
struct Tuning {
  Recurrence recurrence = Recurrence::automatic;
  Exchange exchange = Exchange::automatic;
  BackwardForm backward = BackwardForm::automatic;
  static Tuning decode(int64_t path) {
    Tuning t;
    t.recurrence = static_cast<Recurrence>(path & 3);
    t.exchange = static_cast<Exchange>((path >> 2) & 3);
    t.backward = static_cast<BackwardForm>((path >> 4) & 3);
    return t;
  }
  static bool valid(int64_t path) {
    return path >= 0 && path < 64 && ((path >> 2) & 3) != 3 && ((path >> 4) & 3) != 3;
  }
};

// Which recurrence a layer runs: the persistent kernels (falling back to the per-step kernels
// with their own products where they do not fit), or the per-step kernels with each step's
// product by cuBLAS (gemm).
//
// From kGemmWork work per step (B * H) on, a one-direction fp32 layer takes the gemm form: there
// the persistent kernels' FFMA products fall behind, below it their single launch wins (H200,
// benchmarks/RESULTS.md 2026-11-26, LSTM fwd+bwd us/step, persistent vs cuBLAS: H=512 B=128 106 vs
// 132, B=192 185 vs 144; H=1024 B=128 320 vs 181; B=64: persistent 2-5x faster). The per-step path
// issues its launches from the host every step, ~130 us per fwd+bwd step at the least, twice that
// with two directions (GRU H=512 bi B=64: 272 vs 76), so bidirectional layers keep the persistent
// kernels (their crossover is unmeasured), as do half types, whose tensor-core products win where
// lengths vary (H=1024 B=256: 129 vs 154). Worked example: LSTM H=1024 B=96 fp32 one direction,
// 96 * 1024 = 98304 >= 98304: gemm; the same bidirectional: persistent.
constexpr int64_t kGemmWork = 192 * 512;

struct RecurrencePick {
  Recurrence recurrence;  // persistent, step or gemm
  bool forced;            // a persistent call the kernels refuse is an error
};
inline RecurrencePick choose_recurrence(const Tuning& t, bool fp32, int64_t D, int64_t B, int64_t H) {
  if (t.recurrence != Recurrence::automatic) return {t.recurrence, t.recurrence == Recurrence::persistent};
  const bool gemm = fp32 && D == 1 && B * H >= kGemmWork;
  return {gemm ? Recurrence::gemm : Recurrence::persistent, false};
}

// The persistent forward's exchange of h: tagged 64-bit words (no grid barrier) or a grid barrier
// per step. Tagged words cost one L2 round trip per step but twice (fp32) to four times (half
// types) the bytes of h, and every block reads all of h: past kTaggedMax values per direction the
// bytes cost more than the barrier saves (H200, RESULTS.md). A projection needs a barrier between
// its two products anyway: it always takes the barrier. Example: B=8 P=512 fp32: 4096 values,
// tagged; B=64 P=512: 32768, barrier.
constexpr int64_t kTaggedMax = 8192;
inline bool choose_barrier(const Tuning& t, bool proj, int64_t B, int64_t P) {
  if (proj || t.exchange == Exchange::barrier) return true;
  return t.exchange != Exchange::tagged && B * P > kTaggedMax;
}

// Whether the persistent backward may take its reduce form (it exchanges partial sums of dL/dh
// instead of staging the next step's gate gradients); the plan then checks that it fits. It serves
// fp32 (on an H200 a forward + backward step took 0.78x the staged form's time at B = 64 and 256,
// 1.02x at B = 8; in bf16 the staged form's tensor-core product wins, 0.70x: RESULTS.md), never a
// projection, and by default only where its partials (2 * blocks * B * P floats) are no larger
// than the gate gradients the backward holds anyway (D * T * B * G; B cancels: only short
// sequences fail it).
inline bool reduce_wanted(const Tuning& t, bool fp32, bool proj) {
  if (proj || t.backward == BackwardForm::staged) return false;
  return t.backward == BackwardForm::reduce || fp32;
}
inline bool reduce_fits(const Tuning& t, int64_t blocks, int64_t P, int64_t D, int64_t T, int64_t G) {
  return t.backward == BackwardForm::reduce || 2 * blocks * P <= D * T * G;
}

// Which cells the persistent kernels take: those with several gates (LSTM, GRU). Their blocks hold
// kGates * Hb gate rows of W_hh, at least 4 (the narrowest product, block_gemm's), so a one-gate
// cell (Elman's) would need 4 units per block, i.e. H >= 4 x SMs / D (528 on an H100 with one
// direction), and each cell instantiated costs every persistent kernel again in compile time:
// Elman cells run the per-step kernels.
template <typename Cell>
constexpr bool persistent_takes() {
  return Cell::kGates > 1;
}

// Staging of rows into shared memory: one TMA bulk copy per row on sm_90 and later, faster than
// cp.async (H100, RESULTS.md 2026-11-26: fp32 B=64 H=512 step fwd+bwd 57.7 vs 64.2 us); cp.async
// before. (The emulator runs both by the compute capability it reports.)
inline bool choose_bulk_staging(int major) { return major >= 9; }

}  // namespace packedrnn
