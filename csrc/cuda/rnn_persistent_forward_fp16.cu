// The persistent forward's fp16 kernels (persistent_forward.cuh).
#include "persistent_forward.cuh"

namespace packedrnn {
namespace persistent {

template cudaError_t forward_dispatch<__half, GruCell>(const ForwardParams&, cudaStream_t);
template cudaError_t forward_dispatch<__half, LstmCell>(const ForwardParams&, cudaStream_t);

}  // namespace persistent
}  // namespace packedrnn
