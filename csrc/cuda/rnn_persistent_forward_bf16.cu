// The persistent forward's bf16 kernels (persistent_forward.cuh).
#include "persistent_forward.cuh"

namespace packedrnn {
namespace persistent {

template cudaError_t forward_dispatch<__nv_bfloat16, GruCell>(const ForwardParams&, cudaStream_t);
template cudaError_t forward_dispatch<__nv_bfloat16, LstmCell>(const ForwardParams&, cudaStream_t);

}  // namespace persistent
}  // namespace packedrnn
