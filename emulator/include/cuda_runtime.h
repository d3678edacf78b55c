// CPU emulator (emulator/README.md): the part of the CUDA runtime and of the CUDA C++
// language that the persistent kernels use, for g++. Threads are fibers of emu.cpp.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
// Static: one copy per kernel, which every thread of the running block shares. Right because only
// a plain launch's kernels use it, and those run one block at a time (the cooperative launch's
// kernels keep their shared memory in PACKEDRNN_SHARED_BYTES).
#define __shared__ static
#define __align__(n) alignas(n)
#define __launch_bounds__(...)

enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorLaunchFailure = 719,
  cudaErrorUnknown = 999,
  cudaErrorCooperativeLaunchTooLarge = 720,
  cudaErrorNotSupported = 801,
};
enum cudaDeviceAttr {
  cudaDevAttrMultiProcessorCount = 16,
  cudaDevAttrComputeCapabilityMajor = 75,
  cudaDevAttrMaxSharedMemoryPerBlockOptin = 97,
};
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
typedef struct CUstream_st* cudaStream_t;

struct uint3 { unsigned x, y, z; };
struct alignas(16) float4 { float x, y, z, w; };
struct dim3 {
  unsigned x, y, z;
  dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};

// The running fiber's coordinates (emu.cpp sets them at every switch).
extern uint3 threadIdx, blockIdx;
extern dim3 blockDim, gridDim;

namespace emu {
// The emulated device: its SM count, shared memory per block and compute capability
// (emu_configure and emu_set_compute_capability in driver.cpp).
int sm_count();
int shared_memory_optin();
int compute_major();
void block_barrier();
bool block_or(bool pred);  // a block barrier that returns whether any of its threads' pred held
void warp_exchange(const void* mine, size_t bytes, void* all);  // all: 32 * bytes, by lane
}  // namespace emu

inline cudaError_t cudaGetDevice(int* dev) { return *dev = 0, cudaSuccess; }
inline cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr a, int) {
  *v = a == cudaDevAttrMultiProcessorCount ? emu::sm_count()
       : a == cudaDevAttrComputeCapabilityMajor ? emu::compute_major()
                                                : emu::shared_memory_optin();
  return cudaSuccess;
}
template <typename F>
cudaError_t cudaFuncSetAttribute(F, cudaFuncAttribute, int) { return cudaSuccess; }
template <typename F>
cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* n, F, int, size_t smem) {
  *n = smem <= (size_t)emu::shared_memory_optin() ? 1 : 0;  // __launch_bounds__(256, 1) kernels
  return cudaSuccess;
}
inline cudaError_t cudaGetLastError() { return cudaSuccess; }

inline void __syncthreads() { emu::block_barrier(); }
inline int __syncthreads_or(int pred) { return emu::block_or(pred != 0); }
inline void __syncwarp(unsigned = 0xffffffffu) {
  char mine = 0, all[32];
  emu::warp_exchange(&mine, 1, all);
}
template <typename T>
T __shfl_xor_sync(unsigned, T v, int mask) {
  T all[32];
  emu::warp_exchange(&v, sizeof(T), all);
  return all[(threadIdx.x % 32) ^ mask];
}
inline unsigned __float_as_uint(float v) {
  unsigned u;
  std::memcpy(&u, &v, 4);
  return u;
}
inline float __uint_as_float(unsigned u) {
  float v;
  std::memcpy(&v, &u, 4);
  return v;
}
template <typename T>
T __ldcg(const T* p) { return *p; }
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
