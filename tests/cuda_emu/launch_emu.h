// CPU emulator: what csrc/cuda/rnn_cuda_launch.cpp takes from the CUDA side of torch and from
// cuBLAS, for its emulated build (tests/test_cuda_op_emulated.py): the op's own glue then runs on
// CPU tensors, its kernels on the emulator (the "device" is the CPU, a stream is null).
#pragma once

#include <ATen/ATen.h>

#include <cstdlib>
#include <string>

#include <cuda_runtime.h>

inline const char* cudaGetErrorString(cudaError_t e) {
  return e == cudaSuccess ? "no error" : e == cudaErrorNotSupported ? "operation not supported" : "emulated launch failed";
}

// cuBLAS's names that the glue uses.
#define CUBLAS_VER_MAJOR 13
typedef struct cublasContext* cublasHandle_t;
enum cublasStatus_t { CUBLAS_STATUS_SUCCESS = 0, CUBLAS_STATUS_NOT_SUPPORTED = 15 };
enum cublasOperation_t { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1 };
enum cudaDataType { CUDA_R_32F = 0, CUDA_R_64F = 1, CUDA_R_16F = 2, CUDA_R_16BF = 14 };
enum cublasComputeType_t { CUBLAS_COMPUTE_32F = 68, CUBLAS_COMPUTE_64F = 70 };
enum cublasGemmAlgo_t { CUBLAS_GEMM_DEFAULT = -1 };

namespace at::cuda {
struct CUDAStream {
  operator cudaStream_t() const { return nullptr; }
};
inline CUDAStream getCurrentCUDAStream() { return {}; }
inline cublasHandle_t getCurrentCUDABlasHandle() { return nullptr; }
}  // namespace at::cuda

namespace c10::cuda {
struct CUDAGuard {
  explicit CUDAGuard(const c10::Device&) {}
};
}  // namespace c10::cuda

namespace emu {

// Lengths passed on the CPU are "on the host" unless PACKEDRNN_EMU_DEVICE_LENGTHS=1 says to treat
// them as device memory (which the glue must not read): the two paths of a real device.
inline bool on_host(const at::Tensor& t) {
  const char* v = std::getenv("PACKEDRNN_EMU_DEVICE_LENGTHS");
  return t.is_cpu() && !(v != nullptr && std::string(v) == "1");
}

// cublasGemmStridedBatchedEx's definition, for fp32 and fp64 (all the glue asks for with fp32 and
// fp64 inputs): column-major C[i] (m x n, ldc) = alpha op(A[i]) op(B[i]) + beta C[i], for each i of
// `batch`, op(X) = X or X^T, each matrix `stride*` elements after the one before.
template <typename S>
void gemm_loops(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const void* alpha_, const void* A_,
                int lda, long long sa, const void* B_, int ldb, long long sb, const void* beta_, void* C_, int ldc,
                long long sc, int batch) {
  const S alpha = *static_cast<const S*>(alpha_), beta = *static_cast<const S*>(beta_);
  const S *A = static_cast<const S*>(A_), *B = static_cast<const S*>(B_);
  S* C = static_cast<S*>(C_);
  for (int i = 0; i < batch; ++i) {
    for (int c = 0; c < n; ++c) {
      for (int r = 0; r < m; ++r) {
        S acc = 0;
        for (int q = 0; q < k; ++q) {
          const S a = ta == CUBLAS_OP_N ? A[i * sa + r + q * (long long)lda] : A[i * sa + q + r * (long long)lda];
          const S b = tb == CUBLAS_OP_N ? B[i * sb + q + c * (long long)ldb] : B[i * sb + c + q * (long long)ldb];
          acc += a * b;
        }
        S& out = C[i * sc + r + c * (long long)ldc];
        out = alpha * acc + (beta == S(0) ? S(0) : beta * out);
      }
    }
  }
}

inline cublasStatus_t gemm_strided_batched(cublasHandle_t, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                                           int k, const void* alpha, const void* A, cudaDataType at_, int lda,
                                           long long sa, const void* B, cudaDataType bt, int ldb, long long sb,
                                           const void* beta, void* C, cudaDataType ct, int ldc, long long sc,
                                           int batch, cublasComputeType_t compute, cublasGemmAlgo_t) {
  const bool f32 = at_ == CUDA_R_32F && compute == CUBLAS_COMPUTE_32F;
  const bool f64 = at_ == CUDA_R_64F && compute == CUBLAS_COMPUTE_64F;
  if (at_ != bt || bt != ct || !(f32 || f64)) return CUBLAS_STATUS_NOT_SUPPORTED;
  (f32 ? gemm_loops<float> : gemm_loops<double>)(ta, tb, m, n, k, alpha, A, lda, sa, B, ldb, sb, beta, C, ldc, sc,
                                                  batch);
  return CUBLAS_STATUS_SUCCESS;
}

}  // namespace emu
