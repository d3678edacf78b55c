// C entry points of the emulated CUDA kernels for tests/test_cuda_emulated.py (ctypes): the
// kernels' parameter structs filled from flat arrays, in the field order of csrc/cuda/rnn_cuda.h.
#include <limits>
#include <type_traits>

#include "cells.h"
#include "dtypes.cuh"
#include "hardware_emu.h"
#include "rnn_cuda.h"

using packedrnn::BackwardParams;
using packedrnn::DType;
using packedrnn::ForwardParams;
using packedrnn::StepProducts;

namespace {

// The per-step kernels' recurrent products (StepProducts) as rnn_cuda_launch.cpp's GemmProducts
// forms them with cuBLAS, here in plain loops: out[d][r] = in[d][r] W (forward: in = hbuf [D, B, P],
// W = W_hh^T; backward: in = dgbuf [D, B, G], W = W_hh) in the accumulation type, for the places r
// of the rows active at the step: a prefix (rows longest first) when there are slots, else all B.
// Places past the prefix get NaN: no kernel may read them.
template <typename S>
struct HostProducts {
  using A = typename packedrnn::AccOf<S>::type;
  int64_t T, B, D, G, P;
  bool forward;
  const int64_t *lengths, *slot;
  const S *in, *w_hh;  // w_hh [D, G, P]
  A* out;
  static const void* step(void* self, int64_t s) {
    const auto& h = *static_cast<const HostProducts*>(self);
    int64_t active = h.B;
    if (h.slot != nullptr) {
      active = 0;
      for (int64_t b = 0; b < h.B; ++b) active += h.lengths[b] > s;
    }
    const int64_t K = h.forward ? h.P : h.G, N = h.forward ? h.G : h.P;
    for (int64_t d = 0; d < h.D; ++d) {
      const S* w = h.w_hh + d * h.G * h.P;
      for (int64_t r = 0; r < h.B; ++r) {
        for (int64_t n = 0; n < N; ++n) {
          A acc = r < active ? A(0) : std::numeric_limits<A>::quiet_NaN();
          for (int64_t k = 0; k < K && r < active; ++k) {
            acc += packedrnn::to_acc(h.in[(d * h.B + r) * K + k]) *
                   packedrnn::to_acc(h.forward ? w[n * h.P + k] : w[k * h.P + n]);
          }
          h.out[(d * h.B + r) * N + n] = acc;
        }
      }
    }
    return h.out;
  }
};

// products: [buffer (hbuf or dgbuf), out (gh or ghb), slot] or null: the kernels' own products.
template <typename S, typename Params>
StepProducts host_products(HostProducts<S>& h, const Params& p, bool forward, void* const* products) {
  int64_t gates = 0;
  packedrnn::with_cell(p.cell, [&](auto c) { gates = decltype(c)::kGates; });
  h = HostProducts<S>{p.T, p.B, p.D, gates * p.H, p.P, forward, p.lengths,
                      static_cast<const int64_t*>(products[2]), static_cast<const S*>(products[0]),
                      static_cast<const S*>(p.w_hh), static_cast<typename HostProducts<S>::A*>(products[1])};
  return StepProducts{&HostProducts<S>::step, &h};
}

cudaError_t run_step(const ForwardParams& p, DType dtype, StepProducts sp) {
  return packedrnn::rnn_forward_cuda(p, dtype, nullptr, sp);
}
cudaError_t run_step(const BackwardParams& p, DType dtype, StepProducts sp) {
  return packedrnn::rnn_backward_cuda(p, dtype, nullptr, sp);
}

// The per-step kernels on p, with their own products or (products not null) host_products'.
template <typename Params>
int per_step(const Params& p, DType dtype, void* const* products) {
  constexpr bool forward = std::is_same_v<Params, ForwardParams>;
  HostProducts<float> hf;
  HostProducts<double> hd;
  HostProducts<__half> hh;
  HostProducts<__nv_bfloat16> hb;
  StepProducts sp;
  if (products != nullptr) {
    switch (dtype) {
      case DType::f32: sp = host_products(hf, p, forward, products); break;
      case DType::f64: sp = host_products(hd, p, forward, products); break;
      case DType::f16: sp = host_products(hh, p, forward, products); break;
      case DType::bf16: sp = host_products(hb, p, forward, products); break;
    }
  }
  return run_step(p, dtype, sp);
}

// The forward's parameters from n (cell, T, B, D, H, P, K, proj, tokens, path: the op's `path`,
// rules.h's Tuning) and ptr: lengths, gx, h0,
// w_hh, b_hh, w_hr, c, m, out, h_n, saved, xch, token (null: gx by position).
ForwardParams forward_params(const int64_t* n, void* const* ptr) {
  ForwardParams p{n[0], n[1], n[2], n[3], n[4], n[5], n[6], n[7] != 0,
                  static_cast<const int64_t*>(ptr[0]), ptr[1], ptr[2], ptr[3], ptr[4], ptr[5],
                  ptr[6], ptr[7], ptr[8], ptr[9], ptr[10], ptr[11]};
  p.token = static_cast<const int64_t*>(ptr[12]), p.tokens = n[8], p.tuning = packedrnn::Tuning::decode(n[9]);
  return p;
}

// The backward's parameters from n (as the forward's) and ptr: lengths,
// w_hh, w_hr, saved, grad_out, dh, dc, dm, dgx, dgh, dH, direct, part, token (null: dgx, dgh and
// dH by position).
BackwardParams backward_params(const int64_t* n, void* const* ptr) {
  BackwardParams p{n[0], n[1], n[2], n[3], n[4], n[5], n[6], n[7] != 0,
                   static_cast<const int64_t*>(ptr[0]), ptr[1], ptr[2], ptr[3], ptr[4], ptr[5],
                   ptr[6], ptr[7], ptr[8], ptr[9], ptr[10], ptr[11], ptr[12]};
  p.token = static_cast<const int64_t*>(ptr[13]), p.tokens = n[8], p.tuning = packedrnn::Tuning::decode(n[9]);
  return p;
}

}  // namespace

extern "C" {

void emu_configure(int sms, int optin, unsigned seed) { emu::configure(sms, optin, seed); }
void emu_set_compute_capability(int major) { emu::set_compute_major(major); }
void emu_dry_run(int on) { emu::dry_run(on != 0); }
void emu_last_launch(int* blocks, size_t* smem) { emu::last_launch(blocks, smem); }

// n and ptr as forward_params() / backward_params() take them.
int emu_forward(const int64_t* n, void* const* ptr, int dtype) {
  return packedrnn::rnn_forward_persistent(forward_params(n, ptr), static_cast<DType>(dtype), nullptr);
}

int emu_backward(const int64_t* n, void* const* ptr, int dtype) {
  return packedrnn::rnn_backward_persistent(backward_params(n, ptr), static_cast<DType>(dtype), nullptr);
}

// The per-step kernels (rnn_kernels.cu), the same arrays as emu_forward / emu_backward (xch,
// direct and part unused), products as host_products() takes them. The forward's hbuf holds h0, by place.
int emu_step_forward(const int64_t* n, void* const* ptr, int dtype, void* const* products) {
  ForwardParams p = forward_params(n, ptr);
  if (products != nullptr) p.hbuf = products[0], p.slot = static_cast<const int64_t*>(products[2]);
  return per_step(p, static_cast<DType>(dtype), products);
}

// The backward's dgbuf must be zeroed.
int emu_step_backward(const int64_t* n, void* const* ptr, int dtype, void* const* products) {
  BackwardParams p = backward_params(n, ptr);
  if (products != nullptr) p.dgbuf = products[0], p.slot = static_cast<const int64_t*>(products[2]);
  return per_step(p, static_cast<DType>(dtype), products);
}

// The floats of `part` the backward asks for (its reduce form), from the sizes alone.
int64_t emu_backward_partials(const int64_t* n, int dtype) {
  BackwardParams p{};
  p.cell = n[0], p.T = n[1], p.B = n[2], p.D = n[3], p.H = n[4], p.P = n[5], p.K = n[6], p.proj = n[7] != 0;
  p.tuning = packedrnn::Tuning::decode(n[9]);
  return packedrnn::rnn_backward_persistent_partials(p, static_cast<DType>(dtype));
}

}  // extern "C"
