// The operands of the experiment PACKEDRNN_GEMM=bf16x6 (csrc/layer_gemms.h) in one pass: the ATen
// ops that do the same read and write each value about ten times, about as long as the products.
//
// Shape legend: src [R, C] fp32, row stride ld (columns contiguous). Each value v splits into
// three bf16 pieces v0 = bf16(v), v1 = bf16(v - v0), v2 = bf16(v - v0 - v1) (round to nearest
// even, as torch's casts). dst [6R, C] (stack_rows) or [R, 6C] holds six copies of the [R, C]
// piece matrices side by side; copy j is piece (order >> 2j) & 3.
#include <stdint.h>

#include "dtypes.cuh"
#ifdef PACKEDRNN_EMULATE
#include "hardware_emu.h"  // tests/cuda_emu: the kernel on the CPU
#else
#include "hardware.cuh"
#endif
#include "rnn_cuda.h"

namespace packedrnn {
namespace {

__global__ void split_pieces_kernel(const float* src, int64_t R, int64_t C, int64_t ld, __nv_bfloat16* dst,
                                    bool stack_rows, unsigned order) {
  const int64_t n = R * C;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / C, c = i % C;
    const float v = src[r * ld + c];
    __nv_bfloat16 piece[3];
    piece[0] = __float2bfloat16(v);
    const float rest = v - __bfloat162float(piece[0]);
    piece[1] = __float2bfloat16(rest);
    piece[2] = __float2bfloat16(rest - __bfloat162float(piece[1]));
    for (int j = 0; j < 6; ++j) {
      const int64_t at = stack_rows ? (j * R + r) * C + c : (r * 6 + j) * C + c;
      dst[at] = piece[(order >> (2 * j)) & 3];
    }
  }
}

}  // namespace

cudaError_t split_pieces(const float* src, int64_t R, int64_t C, int64_t ld, void* dst, bool stack_rows,
                         unsigned order, cudaStream_t stream) {
  const int64_t n = R * C, threads = 256;
  if (n == 0) return cudaSuccess;
  const int64_t blocks = (n + threads - 1) / threads < 8192 ? (n + threads - 1) / threads : 8192;
  return persistent::launch(split_pieces_kernel, int(blocks), int(threads), 0, stream, src, R, C, ld,
                            static_cast<__nv_bfloat16*>(dst), stack_rows, order);
}

}  // namespace packedrnn
