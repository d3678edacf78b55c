// The persistent backward's fp16 kernels, staged form (persistent_backward.cuh).
#include "persistent_backward.cuh"

namespace packedrnn {
namespace persistent {

template cudaError_t backward_dispatch<__half, GruCell>(const BackwardParams&, cudaStream_t);
template cudaError_t backward_dispatch<__half, LstmCell>(const BackwardParams&, cudaStream_t);

}  // namespace persistent
}  // namespace packedrnn
