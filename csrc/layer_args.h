// Torch-facing shape checks shared by the CPU and CUDA implementations of the ops in ops.cpp.
// packedrnn.functional validates user input with friendlier messages first; these checks guard
// direct calls of torch.ops.packedrnn.* so that a bad call is an error, never a bad memory access.
#pragma once

#include <ATen/ATen.h>

#include "cells.h"
#include "rules.h"

namespace packedrnn {

inline std::optional<at::Tensor> contig(const std::optional<at::Tensor>& t) {
  return t ? std::optional<at::Tensor>(t->contiguous()) : std::nullopt;
}

// `len` is int64 [B]; where on the host, every value in [0, T] (B comparisons keep every index an
// op derives from them in bounds, whoever calls it).
inline void check_host_lengths(const char* name, const at::Tensor& len, int64_t B, int64_t T) {
  TORCH_CHECK(len.dim() == 1 && len.size(0) == B && len.scalar_type() == at::kLong, "packedrnn: ", name,
              " must be int64 [B] with B = ", B, ", got ", len.sizes(), " ", len.scalar_type());
  if (!len.is_cpu()) return;
  const at::Tensor c = len.contiguous();
  const int64_t* v = c.const_data_ptr<int64_t>();
  for (int64_t b = 0; b < B; ++b) {
    TORCH_CHECK_VALUE(v[b] >= 0, "packedrnn: ", name, "[", b, "] = ", v[b], " is negative");
    TORCH_CHECK_VALUE(v[b] <= T, "packedrnn: ", name, "[", b, "] = ", v[b], " exceeds T = ", T);
  }
}

struct LayerArgs {
  int64_t cell, T, B, I, D, G, H, P;
  bool proj, bias;
  int64_t gates = 0;        // the cell's (cells/*.h), and what the engines ask of it:
  bool cell_state = false;  // c beside h (c0 and c_n)
  bool bias_apart = false;  // b_hh kept out of the input projection (its gradient from dgh)
  bool direct = false;      // a term of dL/dh_{t-1} besides W_hh (the CUDA kernels keep it apart)
  SavedLayout layout{};     // the saved row
  Tuning tuning;            // the caller's forced CUDA choices (rules.h); the CPU op has one path

  void check_lengths(const char* name, const at::Tensor& len) const { check_host_lengths(name, len, B, T); }

  LayerArgs(int64_t cell_, const at::Tensor& x, const at::Tensor& lengths, const std::optional<at::Tensor>& tokens,
            const std::optional<at::Tensor>& host_lengths, const at::Tensor& h0, const std::optional<at::Tensor>& c0, const at::Tensor& w_ih, const at::Tensor& w_hh,
            const std::optional<at::Tensor>& b_ih, const std::optional<at::Tensor>& b_hh,
            const std::optional<at::Tensor>& w_hr, int64_t path)
      : cell(cell_) {
    bool can_project = false;
    const bool known = with_cell(cell, [&](auto c) {
      using C = decltype(c);
      gates = C::kGates, cell_state = C::kCellState, bias_apart = C::kBiasApart, direct = C::kDirect;
      can_project = C::kProjection;
    });
    TORCH_CHECK(known, "packedrnn: cell = ", cell, " is no cell's code (LSTM 0, GRU 1, RNN_TANH 2, RNN_RELU 3)");
    TORCH_CHECK(Tuning::valid(path), "packedrnn: path = ", path, " is not a valid encoding (packedrnn/plan.py)");
    tuning = Tuning::decode(path);
    TORCH_CHECK(x.dim() == 3, "packedrnn: x must be [T, B, I], got ", x.sizes());
    TORCH_CHECK(w_ih.dim() == 3 && w_hh.dim() == 3, "packedrnn: w_ih and w_hh must be [D, G, *]");
    T = x.size(0);
    B = x.size(1);
    I = x.size(2);
    D = w_ih.size(0);
    G = w_ih.size(1);
    H = G / gates;
    P = w_hh.size(2);
    proj = w_hr.has_value();
    bias = b_ih.has_value();
    TORCH_CHECK(D == 1 || D == 2, "packedrnn: w_ih.size(0) (directions) must be 1 or 2, got ", D);
    TORCH_CHECK(G == H * gates && H > 0, "packedrnn: w_ih.size(1) = ", G, " is not a multiple of the gate count ",
                gates);
    TORCH_CHECK(w_ih.sizes() == at::IntArrayRef({D, G, I}), "packedrnn: w_ih must be ", D, "x", G,
                "x", I, ", got ", w_ih.sizes());
    TORCH_CHECK(w_hh.sizes() == at::IntArrayRef({D, G, P}), "packedrnn: w_hh must be [D, G, P], got ",
                w_hh.sizes());
    TORCH_CHECK(proj ? P < H : P == H, "packedrnn: w_hh.size(2) = ", P, " does not fit H = ", H);
    TORCH_CHECK(!proj || can_project, "packedrnn: w_hr (a projection) is only for LSTM");
    if (proj) {
      TORCH_CHECK(w_hr->sizes() == at::IntArrayRef({D, P, H}), "packedrnn: w_hr must be [D, P, H], got ",
                  w_hr->sizes());
    }
    TORCH_CHECK(b_ih.has_value() == b_hh.has_value(), "packedrnn: pass both biases or neither");
    if (bias) {
      TORCH_CHECK(b_ih->sizes() == at::IntArrayRef({D, G}) && b_hh->sizes() == at::IntArrayRef({D, G}),
                  "packedrnn: b_ih and b_hh must be [D, G]");
    }
    check_lengths("lengths", lengths);
    TORCH_CHECK(lengths.device() == x.device(), "packedrnn: lengths must be on x's device, ", x.device(), ", not ",
                lengths.device());
    if (host_lengths) {
      check_lengths("host_lengths", *host_lengths);
      TORCH_CHECK(host_lengths->is_cpu(), "packedrnn: host_lengths must be on the CPU");
    }
    if (tokens) {
      TORCH_CHECK(tokens->dim() == 1 && tokens->scalar_type() == at::kLong && tokens->device() == x.device() &&
                      tokens->numel() <= T * B,
                  "packedrnn: tokens must be int64 [N] on x's device with N <= T*B = ", T * B, ", got ",
                  tokens->sizes(), " ", tokens->scalar_type(), " on ", tokens->device());
    }
    TORCH_CHECK(h0.sizes() == at::IntArrayRef({D, B, P}), "packedrnn: h0 must be [D, B, P] = [", D,
                ", ", B, ", ", P, "], got ", h0.sizes());
    TORCH_CHECK(c0.has_value() == cell_state, "packedrnn: c0 is required for LSTM, absent for other cells");
    if (c0) {
      TORCH_CHECK(c0->sizes() == at::IntArrayRef({D, B, H}), "packedrnn: c0 must be [D, B, H], got ",
                  c0->sizes());
    }
    for (const at::Tensor* t : {&h0, &w_ih, &w_hh}) {
      TORCH_CHECK(t->scalar_type() == x.scalar_type() && t->device() == x.device(),
                  "packedrnn: every tensor must match x's dtype and device");
    }
    with_cell(cell, [&](auto c) { layout = SavedLayout::of<decltype(c)>(H, P, proj); });
  }

};

}  // namespace packedrnn
