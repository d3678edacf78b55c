// The argument checks shared by the CPU and CUDA implementations of the ops in ops.cpp: every size
// and value an op indexes with, before any work. packedrnn.functional checks user input in Python
// first (and names it as the user wrote it); these guard every other caller (a traced graph, a
// direct call of torch.ops.packedrnn.*), so that a bad call is a PackedRNNError (errors.h), never a
// bad memory access.
#pragma once

#include <ATen/ATen.h>

#include "cells.h"
#include "errors.h"
#include "rules.h"

namespace packedrnn {

inline std::optional<at::Tensor> contig(const std::optional<at::Tensor>& t) {
  return t ? std::optional<at::Tensor>(t->contiguous()) : std::nullopt;
}

// `len` is int64 [B]; where on the host, every value in [0, T] (B comparisons keep every index an
// op derives from them in bounds, whoever calls it).
inline void check_host_lengths(const char* name, const at::Tensor& len, int64_t B, int64_t T) {
  PACKEDRNN_CHECK(len.dim() == 1 && len.size(0) == B && len.scalar_type() == at::kLong, name,
              " must be int64 [B] with B = ", B, ", got ", len.sizes(), " ", len.scalar_type());
  PACKEDRNN_CHECK(T >= 0, "T = ", T, " is negative");
  if (!len.is_cpu()) return;
  const at::Tensor c = len.contiguous();
  const int64_t* v = c.const_data_ptr<int64_t>();
  for (int64_t b = 0; b < B; ++b) {
    PACKEDRNN_CHECK(v[b] >= 0, name, "[", b, "] = ", v[b], " is negative");
    PACKEDRNN_CHECK(v[b] <= T, name, "[", b, "] = ", v[b], " exceeds T = ", T);
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

  static void same_kind(const char* name, const at::Tensor& t, const at::Tensor& x) {
    PACKEDRNN_CHECK(t.scalar_type() == x.scalar_type() && t.device() == x.device(), name, " is ", t.scalar_type(),
                    " on ", t.device(), ", x is ", x.scalar_type(), " on ", x.device(), ": they must match");
  }

  // The backward op's own inputs: `saved` as the forward made it with `rows` rows per direction
  // (its token rows, or T*B), and the gradients of out, h_n and c_n.
  void check_backward(const at::Tensor& x, const at::Tensor& saved, int64_t rows, const at::Tensor& grad_out,
                      const at::Tensor& grad_hn, const at::Tensor& grad_cn) const {
    PACKEDRNN_CHECK(saved.numel() == D * rows * layout.K, "saved holds ", saved.numel(), " values, not D*rows*K = ",
                    D, "*", rows, "*", layout.K, " (the forward ran with train=False, or on other lengths)");
    PACKEDRNN_CHECK(grad_out.sizes() == at::IntArrayRef({T, B, D * P}), "grad_out must be [T, B, D*P] = [", T,
                    ", ", B, ", ", D * P, "], got ", grad_out.sizes());
    PACKEDRNN_CHECK(grad_hn.sizes() == at::IntArrayRef({D, B, P}), "grad_hn must be [D, B, P] = [", D, ", ", B,
                    ", ", P, "], got ", grad_hn.sizes());
    if (cell_state) {
      PACKEDRNN_CHECK(grad_cn.sizes() == at::IntArrayRef({D, B, H}), "grad_cn must be [D, B, H] = [", D, ", ",
                      B, ", ", H, "], got ", grad_cn.sizes());
    }
    same_kind("saved", saved, x);
    same_kind("grad_out", grad_out, x);
    same_kind("grad_hn", grad_hn, x);
    if (cell_state) same_kind("grad_cn", grad_cn, x);
  }

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
    PACKEDRNN_CHECK(known, "cell = ", cell, " is no cell's code (LSTM 0, GRU 1, RNN_TANH 2, RNN_RELU 3)");
    PACKEDRNN_CHECK(Tuning::valid(path), "path = ", path, " is not a valid encoding (packedrnn/plan.py)");
    tuning = Tuning::decode(path);
    PACKEDRNN_CHECK(x.dim() == 3, "x must be [T, B, I], got ", x.sizes());
    PACKEDRNN_CHECK(w_ih.dim() == 3 && w_hh.dim() == 3, "w_ih and w_hh must be [D, G, *]");
    T = x.size(0);
    B = x.size(1);
    I = x.size(2);
    D = w_ih.size(0);
    G = w_ih.size(1);
    H = G / gates;
    P = w_hh.size(2);
    proj = w_hr.has_value();
    bias = b_ih.has_value();
    PACKEDRNN_CHECK(D == 1 || D == 2, "w_ih.size(0) (directions) must be 1 or 2, got ", D);
    PACKEDRNN_CHECK(G == H * gates && H > 0, "w_ih.size(1) = ", G, " is not a multiple of the gate count ",
                gates);
    PACKEDRNN_CHECK(w_ih.sizes() == at::IntArrayRef({D, G, I}), "w_ih must be ", D, "x", G,
                "x", I, ", got ", w_ih.sizes());
    PACKEDRNN_CHECK(w_hh.sizes() == at::IntArrayRef({D, G, P}), "w_hh must be [D, G, P], got ",
                w_hh.sizes());
    PACKEDRNN_CHECK(proj ? P < H : P == H, "w_hh.size(2) = ", P, " does not fit H = ", H);
    PACKEDRNN_CHECK(!proj || can_project, "w_hr (a projection) is only for LSTM");
    if (proj) {
      PACKEDRNN_CHECK(w_hr->sizes() == at::IntArrayRef({D, P, H}), "w_hr must be [D, P, H], got ",
                  w_hr->sizes());
    }
    PACKEDRNN_CHECK(b_ih.has_value() == b_hh.has_value(), "pass both biases or neither");
    if (bias) {
      PACKEDRNN_CHECK(b_ih->sizes() == at::IntArrayRef({D, G}) && b_hh->sizes() == at::IntArrayRef({D, G}),
                  "b_ih and b_hh must be [D, G]");
    }
    check_lengths("lengths", lengths);
    PACKEDRNN_CHECK(lengths.device() == x.device(), "lengths must be on x's device, ", x.device(), ", not ",
                lengths.device());
    if (host_lengths) {
      check_lengths("host_lengths", *host_lengths);
      PACKEDRNN_CHECK(host_lengths->is_cpu(), "host_lengths must be on the CPU");
    }
    if (tokens) {
      PACKEDRNN_CHECK(tokens->dim() == 1 && tokens->scalar_type() == at::kLong && tokens->device() == x.device() &&
                      tokens->numel() <= T * B,
                  "tokens must be int64 [N] on x's device with N <= T*B = ", T * B, ", got ",
                  tokens->sizes(), " ", tokens->scalar_type(), " on ", tokens->device());
    }
    PACKEDRNN_CHECK(h0.sizes() == at::IntArrayRef({D, B, P}), "h0 must be [D, B, P] = [", D,
                ", ", B, ", ", P, "], got ", h0.sizes());
    PACKEDRNN_CHECK(c0.has_value() == cell_state, "c0 is required for LSTM, absent for other cells");
    if (c0) {
      PACKEDRNN_CHECK(c0->sizes() == at::IntArrayRef({D, B, H}), "c0 must be [D, B, H], got ",
                  c0->sizes());
    }
    const std::pair<const char*, const at::Tensor*> all[] = {
        {"h0", &h0}, {"c0", c0 ? &*c0 : nullptr}, {"w_ih", &w_ih}, {"w_hh", &w_hh},
        {"b_ih", b_ih ? &*b_ih : nullptr}, {"b_hh", b_hh ? &*b_hh : nullptr}, {"w_hr", w_hr ? &*w_hr : nullptr}};
    for (const auto& [name, t] : all) {
      if (t != nullptr) same_kind(name, *t, x);
    }
    with_cell(cell, [&](auto c) { layout = SavedLayout::of<decltype(c)>(H, P, proj); });
  }

};

}  // namespace packedrnn
