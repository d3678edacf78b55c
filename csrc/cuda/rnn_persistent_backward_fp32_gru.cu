// The persistent backward's fp32 GRU kernels, staged form (persistent_backward.cuh): apart from
// the fp32 LSTM ones (rnn_persistent_backward.cu), so that each file compiles in about 10 s.
#include "persistent_backward.cuh"

namespace packedrnn {
namespace persistent {

template cudaError_t backward_dispatch<float, GruCell>(const BackwardParams&, cudaStream_t);

}  // namespace persistent
}  // namespace packedrnn
