// The persistent forward's entry point, and its fp32 kernels (persistent_forward.cuh; bf16 and fp16
// in files of their own).
#include "persistent_forward.cuh"

namespace packedrnn {

cudaError_t rnn_forward_persistent(const ForwardParams& p, DType dtype, cudaStream_t stream) {
  PACKEDRNN_DISPATCH(persistent::forward_dispatch, p, dtype, stream)
}

}  // namespace packedrnn
