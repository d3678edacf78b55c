// C entry points of the emulated persistent kernels for tests/test_cuda_emulated.py (ctypes): the
// kernels' parameter structs filled from flat arrays, in the field order of csrc/cuda/rnn_cuda.h.
#include "hardware_emu.h"
#include "rnn_cuda.h"

using packedrnn::BackwardParams;
using packedrnn::DType;
using packedrnn::ForwardParams;

extern "C" {

void emu_configure(int sms, int optin, unsigned seed) { emu::configure(sms, optin, seed); }
void emu_dry_run(int on) { emu::dry_run(on != 0); }
void emu_last_launch(int* blocks, size_t* smem) { emu::last_launch(blocks, smem); }

// n: cell, T, B, D, H, P, K, proj. ptr: lengths, gx, h0, w_hh, b_hh, w_hr, c, m, out, h_n, saved, xch.
int emu_forward(const int64_t* n, void* const* ptr, int dtype) {
  const ForwardParams p{n[0], n[1], n[2], n[3], n[4], n[5], n[6], n[7] != 0,
                        static_cast<const int64_t*>(ptr[0]), ptr[1], ptr[2], ptr[3], ptr[4], ptr[5],
                        ptr[6], ptr[7], ptr[8], ptr[9], ptr[10], ptr[11]};
  return packedrnn::rnn_forward_persistent(p, static_cast<DType>(dtype), nullptr);
}

// ptr: lengths, w_hh, w_hr, saved, grad_out, dh, dc, dm, dgx, dgh, dH, direct, part.
int emu_backward(const int64_t* n, void* const* ptr, int dtype) {
  const BackwardParams p{n[0], n[1], n[2], n[3], n[4], n[5], n[6], n[7] != 0,
                         static_cast<const int64_t*>(ptr[0]), ptr[1], ptr[2], ptr[3], ptr[4], ptr[5],
                         ptr[6], ptr[7], ptr[8], ptr[9], ptr[10], ptr[11], ptr[12]};
  return packedrnn::rnn_backward_persistent(p, static_cast<DType>(dtype), nullptr);
}

// The floats of `part` the backward asks for (its reduce form), from the sizes alone.
int64_t emu_backward_partials(const int64_t* n, int dtype) {
  BackwardParams p{};
  p.cell = n[0], p.T = n[1], p.B = n[2], p.D = n[3], p.H = n[4], p.P = n[5], p.K = n[6], p.proj = n[7] != 0;
  return packedrnn::rnn_backward_persistent_partials(p, static_cast<DType>(dtype));
}

}  // extern "C"
