// The persistent forward's fp16 kernels (persistent_forward.cuh).
#include "persistent_forward.cuh"

namespace packedrnn {
namespace persistent {

template cudaError_t forward_dispatch<__half, 3>(const ForwardParams&, cudaStream_t);
template cudaError_t forward_dispatch<__half, 4>(const ForwardParams&, cudaStream_t);

}  // namespace persistent
}  // namespace packedrnn
