// The persistent backward's entry point (the reduce form where it takes the call, else the staged
// form), and the staged form's fp32 LSTM kernels (persistent_backward.cuh; fp32 GRU, bf16 and
// fp16 in files of their own).
#include "persistent_backward.cuh"

namespace packedrnn {

cudaError_t rnn_backward_persistent(const BackwardParams& p, DType dtype, cudaStream_t stream) {
  const cudaError_t e = persistent::backward_reduce(p, dtype, stream);
  if (e != cudaErrorNotSupported) return e;
  PACKEDRNN_DISPATCH(persistent::backward_dispatch, p, dtype, stream)
}

}  // namespace packedrnn
