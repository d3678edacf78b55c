// The persistent backward's bf16 kernels, staged form (persistent_backward.cuh).
#include "persistent_backward.cuh"

namespace packedrnn {
namespace persistent {

template cudaError_t backward_dispatch<__nv_bfloat16, GruCell>(const BackwardParams&, cudaStream_t);
template cudaError_t backward_dispatch<__nv_bfloat16, LstmCell>(const BackwardParams&, cudaStream_t);

}  // namespace persistent
}  // namespace packedrnn
