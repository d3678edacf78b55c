// CPU emulator: what csrc/cuda/rnn_cuda_launch.cpp takes from the CUDA side of torch, for its
// emulated build (tests/test_cuda_op_emulated.py): the op's own glue then runs on CPU tensors, its
// kernels on the emulator (the "device" is the CPU, a stream is null).
#pragma once

#include <ATen/ATen.h>

#include <cuda_runtime.h>

inline const char* cudaGetErrorString(cudaError_t e) {
  return e == cudaSuccess ? "no error" : e == cudaErrorNotSupported ? "operation not supported" : "emulated launch failed";
}

namespace at::cuda {
struct CUDAStream {
  operator cudaStream_t() const { return nullptr; }
};
inline CUDAStream getCurrentCUDAStream() { return {}; }
}  // namespace at::cuda

namespace c10::cuda {
struct CUDAGuard {
  explicit CUDAGuard(const c10::Device&) {}
};
}  // namespace c10::cuda
