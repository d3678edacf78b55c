// Every schema of the packedrnn ops, in one place. Implementations: csrc/cpu/ (CPU) and
// csrc/cuda/ (CUDA); fake (meta) kernels and autograd are registered in packedrnn/ops.py.
//
// One call runs one layer, both directions. Shapes (legend in cells.h), all time-major:
//   x [T, B, I]        padding must be finite (packedrnn.functional zeroes it)
//   lengths [B] int64  on x's device, each in [0, T]; for CUDA x also on the CPU: then the products
//                      around the recurrence skip the padding (see layer_gemms.h)
//   h0 [D, B, P]   c0 [D, B, H] (LSTM; None for GRU)
//   w_ih [D, G, I]   w_hh [D, G, P]   b_ih, b_hh [D, G] (or None)   w_hr [D, P, H] (or None)
//   cell: 0 = LSTM, 1 = GRU;  train: keep `saved` for the backward op
//   path: the caller's forced CUDA choices, 0 for none (Tuning in cuda/rules.h; packedrnn/plan.py
//         sets it); the CPU op has one path and checks only that it is valid
// rnn_layer returns
//   out [T, B, D*P] (zero past each length), h_n [D, B, P], c_n [D, B, H] (LSTM; [0] for GRU),
//   saved [D, N, K] with the lengths on the CPU (the CPU op; CUDA where the caller passed them on
//   the CPU): the N = sum(lengths) valid positions only; else (CUDA, lengths on the device, whose
//   values the host must not read) [D, T, B, K]. K from SavedLayout in cells.h; [0] when train is
//   false. Its layout is the backend's own: pass it to rnn_layer_backward unchanged.
// rnn_layer_backward takes the forward's inputs, saved, and the gradients of out, h_n, c_n
// (grad_cn is ignored for GRU), and returns the gradients of x, h0, c0, w_ih, w_hh, b_ih, b_hh,
// w_hr; those of absent inputs come back as empty tensors.
#include <torch/library.h>

TORCH_LIBRARY(packedrnn, m) {
  m.def(
      "rnn_layer(int cell, Tensor x, Tensor lengths, Tensor h0, Tensor? c0, Tensor w_ih, "
      "Tensor w_hh, Tensor? b_ih, Tensor? b_hh, Tensor? w_hr, bool train, int path) "
      "-> (Tensor out, Tensor h_n, Tensor c_n, Tensor saved)");
  m.def(
      "rnn_layer_backward(int cell, Tensor x, Tensor lengths, Tensor h0, Tensor? c0, "
      "Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh, Tensor? w_hr, Tensor saved, "
      "Tensor grad_out, Tensor grad_hn, Tensor grad_cn, int path) "
      "-> (Tensor dx, Tensor dh0, Tensor dc0, Tensor dw_ih, Tensor dw_hh, Tensor db_ih, "
      "Tensor db_hh, Tensor dw_hr)");
}
