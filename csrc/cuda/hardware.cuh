// What the CUDA kernels take from the hardware beyond plain C++: the launches (the per-step
// kernels' plain one, the persistent kernels' cooperative one), and for the persistent kernels
// (persistent.cuh) inline PTX and the block's dynamic shared memory. emulator/hardware_emu.h
// defines the same names for the CPU emulator that runs the kernels' source in the tests; this
// header stands for it under PACKEDRNN_EMULATE.
#pragma once

#ifdef PACKEDRNN_EMULATE
#include "hardware_emu.h"  // emulator/: the kernels on the CPU
#else

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

namespace packedrnn {

// Launch kernel(args...) on a grid of `blocks` of `threads` threads, no dynamic shared memory.
template <typename Kernel, typename... Args>
cudaError_t launch_grid(Kernel kernel, dim3 blocks, int threads, cudaStream_t stream, Args... args) {
  void* ptrs[] = {(void*)&args...};
  return cudaLaunchKernel((const void*)kernel, blocks, dim3(threads), ptrs, 0, stream);
}

namespace persistent {

// The block's dynamic shared memory, 16-byte aligned, as `unsigned char name[]`.
#define PACKEDRNN_SHARED_BYTES(name) extern __shared__ __align__(16) unsigned char name[]

// Launch kernel(args...) on `blocks` blocks of `threads` threads, all resident at once.
template <typename Kernel, typename... Args>
cudaError_t launch_cooperative(Kernel kernel, int blocks, int threads, size_t smem, cudaStream_t stream,
                               Args... args) {
  void* ptrs[] = {(void*)&args...};
  return cudaLaunchCooperativeKernel((const void*)kernel, dim3(blocks), dim3(threads), ptrs, smem, stream);
}

// The shared-memory address (state space .shared::cta) of a generic pointer into shared memory.
__device__ __forceinline__ unsigned shared_address(const void* p) { return (unsigned)__cvta_generic_to_shared(p); }

// Time in nanoseconds, for PACKEDRNN_TIMING.
__device__ __forceinline__ unsigned long long now_ns() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

// d += A B for one warp, mma.sync.m16n8k16 with fp32 accumulation; fragment layouts in
// persistent.cuh (block_gemm_mma). The last argument picks the input type.
__device__ __forceinline__ void mma(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2], __nv_bfloat16) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
__device__ __forceinline__ void mma(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2], __half) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// 64-bit loads and stores that are single-copy atomic and coherent across SMs (the L1 is bypassed).
__device__ __forceinline__ unsigned long long load_relaxed(const unsigned long long* p) {
  unsigned long long v;
  asm volatile("ld.relaxed.gpu.global.u64 %0, [%1];" : "=l"(v) : "l"(p) : "memory");
  return v;
}
__device__ __forceinline__ void store_relaxed(unsigned long long* p, unsigned long long v) {
  asm volatile("st.relaxed.gpu.global.u64 [%0], %1;" ::"l"(p), "l"(v) : "memory");
}

// 16-byte asynchronous copy global -> shared (L2 only: data written by other SMs before a grid
// barrier); the end of a group of a thread's copies; the wait until at most `pending` (0..7) of
// its groups are still in flight.
__device__ __forceinline__ void copy16_async(void* dst, const void* src) {
  const unsigned d = (unsigned)__cvta_generic_to_shared(dst);
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(d), "l"(src) : "memory");
}
__device__ __forceinline__ void commit_copies() { asm volatile("cp.async.commit_group;" ::: "memory"); }
__device__ __forceinline__ void wait_copies(int pending) {
  switch (pending) {  // the count is an immediate operand
    case 0: asm volatile("cp.async.wait_group 0;" ::: "memory"); break;
    case 1: asm volatile("cp.async.wait_group 1;" ::: "memory"); break;
    case 2: asm volatile("cp.async.wait_group 2;" ::: "memory"); break;
    case 3: asm volatile("cp.async.wait_group 3;" ::: "memory"); break;
    case 4: asm volatile("cp.async.wait_group 4;" ::: "memory"); break;
    case 5: asm volatile("cp.async.wait_group 5;" ::: "memory"); break;
    case 6: asm volatile("cp.async.wait_group 6;" ::: "memory"); break;
    default: asm volatile("cp.async.wait_group 7;" ::: "memory"); break;
  }
}

// Bulk copies (Hopper, sm_90: the TMA engine), the persistent kernels' staging there: one
// instruction copies a whole row global -> shared and counts its bytes on an mbarrier in shared
// memory. A phase of the barrier completes when its one arrival (bulk_expect, which also adds the
// bytes to wait for) has happened and every byte has landed; threads wait for it by its parity.
// Not built below sm_90, where the host never asks for it (plan_for).
__device__ __forceinline__ void bulk_init(unsigned long long* bar) {  // one thread; a __syncthreads after
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 900
  asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(shared_address(bar)) : "memory");
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
#else
  __trap();
#endif
}
__device__ __forceinline__ void bulk_expect(unsigned long long* bar, unsigned bytes) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 900
  // What this block's threads did in shared memory before the last __syncthreads, and the global
  // memory that other blocks wrote before the last grid barrier (generic proxy), is ordered before
  // the copies that follow (async proxy): a proxy fence over all state spaces.
  asm volatile("fence.proxy.async;" ::: "memory");
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(shared_address(bar)), "r"(bytes)
               : "memory");
#else
  __trap();
#endif
}
__device__ __forceinline__ void bulk_copy(void* dst, const void* src, unsigned bytes, unsigned long long* bar) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 900
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];"
               ::"r"(shared_address(dst)), "l"(src), "r"(bytes), "r"(shared_address(bar)) : "memory");
#else
  __trap();
#endif
}
__device__ __forceinline__ bool bulk_done(unsigned long long* bar, unsigned parity) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 900
  unsigned done;
  asm volatile("{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
               " selp.u32 %0, 1, 0, p;\n}"
               : "=r"(done) : "r"(shared_address(bar)), "r"(parity) : "memory");
  return done != 0;
#else
  __trap();
  return true;
#endif
}

}  // namespace persistent
}  // namespace packedrnn

#endif  // PACKEDRNN_EMULATE
