// The large matrix products around the recurrence, through ATen (MKL/oneDNN on the CPU, cuBLAS on
// CUDA): CUDA's input projection and both backends' weight and input gradients (the CPU forward
// projects inside its recurrence, cpu/rnn_cpu.cpp, with input_bias below). They run over N "token
// rows": the CPU gathers the valid (t, b) positions first (N = sum(lengths), no work on padding);
// so does CUDA when the caller passed the lengths on the CPU (packedrnn.functional does where that
// skips enough work, GATHER_FLOPS); with lengths on the device, which CUDA must not read on the host, it uses all N = T*B positions, with
// dgx/dgh zero at padded ones and padded x finite, so those contribute exactly nothing.
#pragma once

#include <ATen/ATen.h>

#include "layer_args.h"

namespace packedrnn {

// The flat positions t*B + b of the valid tokens (t < lengths[b]), time-major, from int64 lengths
// on the CPU: the token rows' order.
inline at::Tensor valid_positions(const at::Tensor& lengths, int64_t T, int64_t B) {
  return (at::arange(T, lengths.options()).unsqueeze(1) < lengths.unsqueeze(0)).view({T * B}).nonzero().squeeze(1);
}

// The bias added to x W_ih^T, [D, G] (undefined without biases): b_ih, plus b_hh where both biases
// simply add (a cell whose b_hh stays apart, GRU's, adds it to the recurrent product instead:
// cells/*.h kBiasApart).
inline at::Tensor input_bias(const LayerArgs& a, const std::optional<at::Tensor>& b_ih,
                             const std::optional<at::Tensor>& b_hh) {
  if (!a.bias) return at::Tensor();
  return (a.bias_apart ? *b_ih : *b_ih + *b_hh).contiguous();
}

// gx [D, N, G] = x_rows [N, I] W_ih^T + input_bias.
inline at::Tensor input_projection(const LayerArgs& a, const at::Tensor& x2, const at::Tensor& w_ih,
                                   const std::optional<at::Tensor>& b_ih,
                                   const std::optional<at::Tensor>& b_hh) {
  at::Tensor gx = at::empty({a.D, x2.size(0), a.G}, x2.options());
  const at::Tensor bias = input_bias(a, b_ih, b_hh);
  for (int64_t d = 0; d < a.D; ++d) {
    at::Tensor out = gx[d];
    if (bias.defined()) {
      at::addmm_out(out, bias[d], x2, w_ih[d].t());
    } else {
      at::mm_out(out, x2, w_ih[d].t());
    }
  }
  return gx;
}

// The gradients of everything but the recurrence, over N token rows, from
//   x2 [N, I]   h_prev [D, N, P] and m [D, N, H] (projection) of the saved rows
//   dgx [D, N, G] dL/d(x projection)   dgh [D, N, G] dL/d(h projection) (the same tensor unless
//   the cell keeps b_hh apart)
//   dH [D, N, P] dL/dh (projection)
// Returns dx_rows [N, I], dw_ih, dw_hh, db_ih, db_hh, dw_hr (empty where absent).
inline std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
weight_and_input_grads(const LayerArgs& a, const at::Tensor& x2, const at::Tensor& w_ih,
                       const at::Tensor& h_prev, const at::Tensor& m, const at::Tensor& dgx,
                       const at::Tensor& dgh, const at::Tensor& dH) {
  const auto opt = x2.options();
  at::Tensor dx = at::empty({x2.size(0), a.I}, opt);
  at::Tensor dw_ih = at::empty_like(w_ih);
  at::Tensor dw_hh = at::empty({a.D, a.G, a.P}, opt);
  at::Tensor dw_hr = a.proj ? at::empty({a.D, a.P, a.H}, opt) : at::empty({0}, opt);
  for (int64_t d = 0; d < a.D; ++d) {
    if (d == 0) {
      at::mm_out(dx, dgx[d], w_ih[d]);
    } else {
      dx.addmm_(dgx[d], w_ih[d]);
    }
    at::Tensor dw_ih_d = dw_ih[d], dw_hh_d = dw_hh[d];
    at::mm_out(dw_ih_d, dgx[d].t(), x2);
    at::mm_out(dw_hh_d, dgh[d].t(), h_prev[d]);
    if (a.proj) {
      at::Tensor dw_hr_d = dw_hr[d];
      at::mm_out(dw_hr_d, dH[d].t(), m[d]);
    }
  }
  at::Tensor db_ih = a.bias ? dgx.sum(1) : at::empty({0}, opt);
  at::Tensor db_hh = a.bias ? (a.bias_apart ? dgh.sum(1) : db_ih.clone()) : at::empty({0}, opt);
  return {dx, dw_ih, dw_hh, db_ih, db_hh, dw_hr};
}

}  // namespace packedrnn
