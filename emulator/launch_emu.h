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

namespace emu {

bool device_lengths();  // emu_set_device_lengths (driver.cpp)

// Lengths passed on the CPU are "on the host" unless the test says to treat them as device memory
// (emu_set_device_lengths), which the glue must not read: the two paths of a real device.
inline bool on_host(const at::Tensor& t) { return t.is_cpu() && !device_lengths(); }

}  // namespace emu
