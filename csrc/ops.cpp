// Every schema of the packedrnn ops, in one place. Implementations: csrc/cpu/ (CPU) and
// csrc/cuda/ (CUDA); fake (meta) kernels and autograd are registered in packedrnn/ops.py.
//
// token_index(lengths [B] int64 on the CPU, T) -> tokens [N] int64: the flat positions t*B + b of
// the N = sum(lengths) valid tokens (t < lengths[b]), time-major. Made once per call
// (packedrnn.functional) and handed to every layer: the "token layout".
//
// One rnn_layer call runs one layer, both directions. Shapes (legend in cells.h), all time-major:
//   x [T, B, I]        padding must be finite (packedrnn.functional zeroes it)
//   lengths [B] int64  on x's device, each in [0, T]
//   tokens [N] int64   on x's device, or None: token_index's positions (any order): gx, saved and
//                      the gate gradients then hold the valid positions only, and the products
//                      around the recurrence skip the padding. The CPU op requires them; the ops
//                      check that they are exactly the valid positions of `lengths` (CUDA: on the
//                      device, no sync)
//   host_lengths [B] int64 on the CPU, or None: the lengths where the caller has them on the host
//                      (CUDA: the gemm recurrence then stops each step's product at the rows still
//                      active); ignored by the CPU op, whose lengths are on the host
//   h0 [D, B, P]   c0 [D, B, H] (cells with a cell state, else None)
//   w_ih [D, G, I]   w_hh [D, G, P]   b_ih, b_hh [D, G] (or None)   w_hr [D, P, H] (or None)
//   cell: the cell's code (cells/*.h kCode: LSTM 0, GRU 1, RNN_TANH 2, RNN_RELU 3)
//   train: keep `saved` for the backward op
//   path: the caller's forced CUDA choices, 0 for none (Tuning in cuda/rules.h; packedrnn/plan.py
//         sets it); the CPU op has one path and checks only that it is valid
// rnn_layer returns
//   out [T, B, D*P] (zero past each length), h_n [D, B, P], c_n [D, B, H] (cells with a cell
//   state; [0] otherwise), saved [D, N, K] with tokens, else [D, T, B, K] (K: SavedLayout in
//   cells.h); [0] when train is false. Pass it to rnn_layer_backward unchanged.
// rnn_layer_backward takes the forward's inputs, saved, and the gradients of out, h_n, c_n
// (grad_cn is ignored without a cell state), and returns the gradients of x, h0, c0, w_ih, w_hh,
// b_ih, b_hh, w_hr; those of absent inputs come back as empty tensors.
#include <torch/library.h>

TORCH_LIBRARY(packedrnn, m) {
  m.def("token_index(Tensor lengths, SymInt T) -> Tensor");
  m.def(
      "rnn_layer(int cell, Tensor x, Tensor lengths, Tensor? tokens, Tensor? host_lengths, Tensor h0, "
      "Tensor? c0, Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh, Tensor? w_hr, bool train, int path) "
      "-> (Tensor out, Tensor h_n, Tensor c_n, Tensor saved)");
  m.def(
      "rnn_layer_backward(int cell, Tensor x, Tensor lengths, Tensor? tokens, Tensor? host_lengths, "
      "Tensor h0, Tensor? c0, Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh, Tensor? w_hr, "
      "Tensor saved, Tensor grad_out, Tensor grad_hn, Tensor grad_cn, int path) "
      "-> (Tensor dx, Tensor dh0, Tensor dc0, Tensor dw_ih, Tensor dw_hh, Tensor db_ih, "
      "Tensor db_hh, Tensor dw_hr)");
}
