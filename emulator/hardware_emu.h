// CPU emulator: the names of csrc/cuda/hardware.cuh, for g++ (emulator/README.md). Warp-wide
// operations (mma, shuffles) meet all 32 lanes of the warp, as the hardware does; cp.async is a
// checked copy that lands only when waited for (or earlier, under random orders); loads that poll
// other blocks' words let the other threads run.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstring>
#include <functional>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

namespace emu {
// The emulated device (SMs, shared memory per block) and the scheduling seed (emu.cpp); its
// compute capability (9 by default: the bulk copies' staging; 8: cp.async's).
void configure(int sms, int optin, unsigned seed);
void set_compute_major(int major);
void dry_run(bool on);                         // launches only record their size:
void last_launch(int* blocks, size_t* smem);   // the last one's
// Runs body() on blocks x threads fibers; nonzero (and a message on stderr) when the threads
// deadlock, a barrier is left unbalanced, or a block writes past its shared memory.
int launch(int blocks, int threads, size_t smem, const std::function<void()>& body);
// A plain launch: runs the grid's blocks one after another (blocks of a plain launch never wait
// for each other), each as `threads` fibers, with the same checks.
int launch_blocks(dim3 grid, int threads, const std::function<void()>& body);
unsigned char* shared_memory();  // the running block's, `smem` bytes, 16-byte aligned
void yield();                    // let the other threads run
bool fail(const char* what);     // records the launch's first failure; returns false
// cp.async: a 16-byte copy that lands when the thread waits for its group (seed 0), or at random
// at issue or at the wait (other seeds); the end of a group; the wait for all but `pending`.
void copy_async(void* dst, const void* src);
void commit_copies();
void wait_copies(int pending);
// Whether [p, p + bytes) lies in the running block's shared memory, aligned to `bytes`.
bool in_shared(const void* p, size_t bytes);
// mbarrier and bulk copies (the TMA engine): a copy of `bytes` that lands when a thread waits on
// its barrier (seed 0), or at random at issue or at the wait (other seeds), and then counts its
// bytes; a phase completes after its one arrival and all its bytes. bulk_done polls.
void bulk_init(void* bar);
void bulk_expect(void* bar, unsigned bytes);
void bulk_copy(void* dst, const void* src, unsigned bytes, void* bar);
bool bulk_done(void* bar, unsigned parity);
}  // namespace emu

namespace packedrnn {

template <typename Kernel, typename... Args>
cudaError_t launch_grid(Kernel kernel, dim3 blocks, int threads, cudaStream_t, Args... args) {
  return emu::launch_blocks(blocks, threads, [&] { kernel(args...); }) == 0 ? cudaSuccess : cudaErrorLaunchFailure;
}

namespace persistent {

#define PACKEDRNN_SHARED_BYTES(name) unsigned char* name = emu::shared_memory()

template <typename Kernel, typename... Args>
cudaError_t launch_cooperative(Kernel kernel, int blocks, int threads, size_t smem, cudaStream_t, Args... args) {
  return emu::launch(blocks, threads, smem, [&] { kernel(args...); }) == 0 ? cudaSuccess : cudaErrorLaunchFailure;
}

inline unsigned long long now_ns() {
  return (unsigned long long)std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch()).count();
}

inline float from_bits(uint16_t b, __half) {
  __half h;
  h.bits = b;
  return __half2float(h);
}
inline float from_bits(uint16_t b, __nv_bfloat16) {
  __nv_bfloat16 h;
  h.bits = b;
  return __bfloat162float(h);
}

// mma.sync.m16n8k16.row.col with fp32 accumulation, from the fragment layouts of the PTX ISA
// (g = lane / 4, q = lane % 4; the lower 16 bits of a register hold the lower column/row index):
//   A[g][2q..], A[g+8][2q..], A[g][2q+8..], A[g+8][2q+8..]   B[2q..][g], B[2q+8..][g]
//   D[g][2q], D[g][2q+1], D[g+8][2q], D[g+8][2q+1]
template <typename S>
void mma_emulated(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2]) {
  struct Fragments {
    unsigned a[4], b[2];
  } mine = {{a[0], a[1], a[2], a[3]}, {b[0], b[1]}}, all[32];
  emu::warp_exchange(&mine, sizeof mine, all);
  float A[16][16], B[16][8];
  for (int l = 0; l < 32; ++l) {
    const int g = l / 4, q = l % 4;
    for (int e = 0; e < 2; ++e) {
      auto v = [&](unsigned reg) { return from_bits((uint16_t)(e ? reg >> 16 : reg & 0xffffu), S()); };
      A[g][2 * q + e] = v(all[l].a[0]);
      A[g + 8][2 * q + e] = v(all[l].a[1]);
      A[g][2 * q + 8 + e] = v(all[l].a[2]);
      A[g + 8][2 * q + 8 + e] = v(all[l].a[3]);
      B[2 * q + e][g] = v(all[l].b[0]);
      B[2 * q + 8 + e][g] = v(all[l].b[1]);
    }
  }
  const int lane = threadIdx.x % 32, g = lane / 4, q = lane % 4;
  for (int i = 0; i < 4; ++i) {
    const int r = g + 8 * (i / 2), c = 2 * q + i % 2;
    float sum = 0.f;
    for (int k = 0; k < 16; ++k) sum += A[r][k] * B[k][c];
    d[i] += sum;
  }
}
inline void mma(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2], __nv_bfloat16) {
  mma_emulated<__nv_bfloat16>(d, a, b);
}
inline void mma(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2], __half) {
  mma_emulated<__half>(d, a, b);
}

inline unsigned long long load_relaxed(const unsigned long long* p) {
  emu::yield();  // a poll: the writer must get to run
  return *p;
}
inline void store_relaxed(unsigned long long* p, unsigned long long v) { *p = v; }

inline void copy16_async(void* dst, const void* src) {
  if (!emu::in_shared(dst, 16)) {
    emu::fail("cp.async: destination outside shared memory or not 16-byte aligned");
  } else if (reinterpret_cast<uintptr_t>(src) % 16 != 0) {
    emu::fail("cp.async: source not 16-byte aligned");
  } else {
    emu::copy_async(dst, src);
  }
}
inline void bulk_init(unsigned long long* bar) { emu::bulk_init(bar); }
inline void bulk_expect(unsigned long long* bar, unsigned bytes) { emu::bulk_expect(bar, bytes); }
inline void bulk_copy(void* dst, const void* src, unsigned bytes, unsigned long long* bar) {
  const unsigned char* d = static_cast<const unsigned char*>(dst);
  if (bytes % 16 != 0 || !emu::in_shared(dst, 16) || !emu::in_shared(d + bytes - 16, 16)) {
    emu::fail("cp.async.bulk: destination outside shared memory, or not 16-byte aligned or sized");
  } else if (reinterpret_cast<uintptr_t>(src) % 16 != 0) {
    emu::fail("cp.async.bulk: source not 16-byte aligned");
  } else {
    emu::bulk_copy(dst, src, bytes, bar);
  }
}
inline bool bulk_done(unsigned long long* bar, unsigned parity) { return emu::bulk_done(bar, parity); }
inline void commit_copies() { emu::commit_copies(); }
inline void wait_copies(int pending) { emu::wait_copies(pending < 7 ? pending : 7); }

}  // namespace persistent
}  // namespace packedrnn
