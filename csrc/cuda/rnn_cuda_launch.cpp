// Torch glue of the CUDA ops (compiled only in CUDA builds): device guard, current stream,
// allocation, the cuBLAS products around the recurrence (layer_gemms.h), and the framework-free
// recurrence kernels (rnn_kernels.cu). Nothing here reads device memory on the host: no sync.
// Schemas and shapes: ops.cpp; legend: cells.h. Under PACKEDRNN_EMULATE (emulator/) the
// same glue runs on CPU tensors as the op packedrnn_emu, its kernels on the CPU emulator.
#include <ATen/ATen.h>
#include <torch/library.h>
#ifdef PACKEDRNN_EMULATE
#include "launch_emu.h"
#else
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#endif

#include "cells.h"
#include "layer_args.h"
#include "layer_gemms.h"
#include "rnn_cuda.h"
#include "rules.h"

namespace packedrnn {
namespace {

DType dtype_of(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return DType::f32;
    case at::kDouble: return DType::f64;
    case at::kHalf: return DType::f16;
    case at::kBFloat16: return DType::bf16;
    default: PACKEDRNN_CHECK(false, "the CUDA op takes float32, float64, float16 or bfloat16, got ", t);
  }
}

// Recurrent state is carried in the accumulation dtype: float for half types.
at::ScalarType acc_of(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

const void* ptr(const std::optional<at::Tensor>& t) { return t ? t->data_ptr() : nullptr; }

void check(cudaError_t e) { TORCH_CHECK(e == cudaSuccess, "packedrnn: CUDA kernel failed: ", cudaGetErrorString(e)); }

#ifdef PACKEDRNN_EMULATE
at::Tensor upload(const at::Tensor& host, const at::Device&) { return host.clone(); }
#else
// A host tensor's copy on `device`, through pinned memory: asynchronous.
at::Tensor upload(const at::Tensor& host, const at::Device& device) {
  return host.pin_memory().to(device, /*non_blocking=*/true);
}
#endif

// Which recurrence a call runs (choose_recurrence, rules.h): the persistent kernels (`force`: a
// call they refuse is an error), or the per-step kernels with their own products or cuBLAS's.
struct Recurrence {
  bool persistent = false, gemm = false, force = false;
  Recurrence(const LayerArgs& a, at::ScalarType t) {
    const RecurrencePick pick = choose_recurrence(a.tuning, t == at::kFloat, a.D, a.B, a.H);
    persistent = pick.recurrence == packedrnn::Recurrence::persistent;
    gemm = pick.recurrence == packedrnn::Recurrence::gemm;
    force = pick.forced;
  }
};

// One step's recurrent product for the per-step kernels (StepProducts, rnn_cuda.h): out = in w,
// one GEMM per direction: forward in = hbuf [D, B, P], w = W_hh^T [D, P, G];
// backward in = dgbuf [D, B, G], w = W_hh [D, G, P]. In the accumulation dtype: half types
// multiply on tensor cores into fp32.
// Rows are at places `slot` of in and out; `active[s]` (when the lengths are known on the host)
// is how many places, from the first, hold rows active at step s: the product stops there.
struct GemmProducts {
  at::Tensor in, w, out;
  std::vector<at::Tensor> in_d, w_d, out_d;  // per direction, made once (views cost host time each step)
  std::vector<int64_t> active;
  GemmProducts() = default;
  GemmProducts(const at::Tensor& in_, const at::Tensor& w_, at::ScalarType acc, std::vector<int64_t> active_)
      : in(in_), w(w_), out(at::empty({in_.size(0), in_.size(1), w_.size(2)}, in_.options().dtype(acc))),
        active(std::move(active_)) {
    for (int64_t d = 0; d < in.size(0); ++d) in_d.push_back(in[d]), w_d.push_back(w[d]), out_d.push_back(out[d]);
  }
  static const void* step(void* self, int64_t s) {
    auto& g = *static_cast<GemmProducts*>(self);
    const int64_t B = g.in.size(1), n = g.active.empty() ? B : g.active[s];
    for (size_t d = 0; d < g.in_d.size() && n > 0; ++d) {
      at::Tensor out = n == B ? g.out_d[d] : g.out_d[d].narrow(0, 0, n);
      const at::Tensor in = n == B ? g.in_d[d] : g.in_d[d].narrow(0, 0, n);
      if (in.scalar_type() == out.scalar_type()) {
        at::mm_out(out, in, g.w_d[d]);
      } else {
        at::mm_out(out, in, g.w_d[d], out.scalar_type());
      }
    }
    return g.out.data_ptr();
  }
  // None (the per-step kernels' own products) unless constructed for the gemm mode.
  StepProducts products() { return in.defined() ? StepProducts{&GemmProducts::step, this} : StepProducts{}; }
};

// The places of the gemm mode's rows when the lengths are on the host: longest first (stable), so
// the rows active at a step are a prefix. order[i] = the row at place i, slot[b] = row b's place
// (both on the device), active[s] = rows longer than s.
struct RowPlaces {
  at::Tensor order, slot;
  std::vector<int64_t> active;
  RowPlaces(const at::Tensor& host_lengths, int64_t T, const at::Device& device) {
    const auto [sorted, idx] = at::sort(host_lengths.to(at::kLong), /*stable=*/true, /*dim=*/0, /*descending=*/true);
    const int64_t B = sorted.numel();
    order = upload(idx, device);
    slot = upload(at::argsort(idx), device);
    const int64_t* L = sorted.data_ptr<int64_t>();
    int64_t n = B;
    for (int64_t s = 0; s < T; ++s) {
      while (n > 0 && L[n - 1] <= s) --n;
      active.push_back(n);
    }
  }
};

// A layer's rows as the caller describes them (ops.cpp): the lengths on x's device; with `tokens`,
// the token layout: gx, saved and the gate gradients hold the valid positions only, row token[pos]
// for position pos = t*B + b (-1: padded), a map built here on the device by one scatter. It is
// checked there against the lengths, without a sync (a device-side assert): tokens that are not
// exactly the valid positions would send the kernels outside those buffers. `host`, the lengths
// on the host where the caller has them, gives the gemm recurrence its row places.
struct Rows {
  at::Tensor lengths;
  std::optional<at::Tensor> tokens, host;
  at::Tensor token;  // [T*B], or undefined without tokens
  Rows(const LayerArgs& a, const at::Tensor& lengths_, const std::optional<at::Tensor>& tokens_,
       const std::optional<at::Tensor>& host_)
      : lengths(lengths_.contiguous()), host(host_) {
    if (!tokens_) return;
    tokens = tokens_->contiguous();
    const auto opt = tokens->options();
    const int64_t N = tokens->numel();
    token = at::full({a.T * a.B}, -1, opt).scatter_(0, *tokens, at::arange(N, opt));
    const at::Tensor valid = (at::arange(a.T, opt).unsqueeze(1) < lengths.unsqueeze(0)).view({a.T * a.B});
    at::_assert_async(token.ge(0).eq(valid).all().logical_and(lengths.sum().eq(N)),
                      "packedrnn: tokens are not exactly the valid positions of lengths (token_index)");
  }
  // BackwardParams/ForwardParams::token and tokens: the token layout of rows, or by position.
  template <typename Params>
  void set_layout(Params& p) const {
    p.token = token.defined() ? token.data_ptr<int64_t>() : nullptr;
    p.tokens = tokens ? tokens->numel() : 0;
  }
  // The gemm mode's row places (RowPlaces) where the lengths are on the host.
  std::optional<RowPlaces> places(const LayerArgs& a, const at::Tensor& x) const {
    if (!host) return std::nullopt;
    return RowPlaces(*host, a.T, x.device());
  }
};

// The persistent kernel where chosen and it fits, else the per-step kernels (with `products`, if any).
template <typename Params>
void run(const Recurrence& how, const Params& p, DType dtype,
         cudaError_t (*persistent)(const Params&, DType, cudaStream_t),
         cudaError_t (*per_step)(const Params&, DType, cudaStream_t, StepProducts), StepProducts products) {
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  cudaError_t e = how.persistent ? persistent(p, dtype, stream) : cudaErrorNotSupported;
  if (e == cudaErrorNotSupported || e == cudaErrorCooperativeLaunchTooLarge) {
    (void)cudaGetLastError();  // a refused attempt leaves nothing behind
    PACKEDRNN_CHECK(!how.force, "the persistent kernel refused this call "
                "(recurrence forced to persistent): B=", p.B, " H=", p.H, " D=", p.D, " proj=", p.proj);
    e = per_step(p, dtype, stream, products);
  }
  check(e);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> rnn_layer_cuda(
    int64_t cell, const at::Tensor& x_, const at::Tensor& lengths_, const std::optional<at::Tensor>& tokens,
    const std::optional<at::Tensor>& host_lengths, const at::Tensor& h0_, const std::optional<at::Tensor>& c0,
    const at::Tensor& w_ih, const at::Tensor& w_hh_, const std::optional<at::Tensor>& b_ih,
    const std::optional<at::Tensor>& b_hh_, const std::optional<at::Tensor>& w_hr_, bool train, int64_t path) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  const c10::cuda::CUDAGuard guard(x_.device());
  const LayerArgs a(cell, x_, lengths_, tokens, host_lengths, h0_, c0, w_ih, w_hh_, b_ih, b_hh_, w_hr_, path);
  const SavedLayout& L = a.layout;
  const at::Tensor x = x_.contiguous(), h0 = h0_.contiguous();
  const at::Tensor w_hh = w_hh_.contiguous();
  const auto b_hh = contig(b_hh_), w_hr = contig(w_hr_);
  const auto opt = x.options();
  const Rows index(a, lengths_, tokens, host_lengths);
  const at::Tensor& lengths = index.lengths;
  // gx over the valid positions where they are known (the token layout), else all T*B; padded
  // rows are never read.
  const at::Tensor x_rows = x.view({a.T * a.B, a.I});
  const at::Tensor gx = input_projection(a, index.tokens ? x_rows.index_select(0, *index.tokens) : x_rows, w_ih, b_ih, b_hh_);
  at::Tensor out = at::zeros({a.T, a.B, a.D * a.P}, opt);
  at::Tensor h_n = at::empty({a.D, a.B, a.P}, opt);
  at::Tensor c = a.cell_state ? c0->to(acc_of(x.scalar_type()), /*non_blocking=*/false, /*copy=*/true).contiguous()
                                 : at::Tensor();
  at::Tensor m = a.proj ? at::empty({a.D, a.B, a.H}, opt) : at::Tensor();
  // By token where the positions are known (every row written), else by position, zeroed: the
  // weight-gradient GEMMs then read every row, padded ones included.
  at::Tensor saved = !train     ? at::empty({0}, opt)
                     : index.tokens ? at::empty({a.D, index.tokens->numel(), L.K}, opt)
                                 : at::zeros({a.D, a.T, a.B, L.K}, opt);

  // The persistent kernel's exchange of h between blocks (not for fp64, which it does not take,
  // nor for a projection, which exchanges through `out` and grid barriers); zeroed, so no stale
  // tag matches.
  const Recurrence how(a, x.scalar_type());
  const bool may_persist = how.persistent && !a.proj && x.scalar_type() != at::kDouble;
  at::Tensor xch = may_persist ? at::zeros({2, a.D, a.B, a.P}, opt.dtype(at::kLong)) : at::Tensor();

  ForwardParams p{a.cell, a.T, a.B, a.D, a.H, a.P, L.K, a.proj, lengths.data_ptr<int64_t>(),
                  gx.data_ptr(), h0.data_ptr(), w_hh.data_ptr(),
                  a.bias_apart ? ptr(b_hh) : nullptr, ptr(w_hr),
                  c.defined() ? c.data_ptr() : nullptr, m.defined() ? m.data_ptr() : nullptr,
                  out.data_ptr(), h_n.data_ptr(), train ? saved.data_ptr() : nullptr,
                  xch.defined() ? xch.data_ptr() : nullptr};
  p.tuning = a.tuning;
  index.set_layout(p);
  GemmProducts gemm;
  const auto places = how.gemm ? index.places(a, x) : std::nullopt;
  if (how.gemm) {
    gemm = GemmProducts(places ? h0.index_select(1, places->order) : h0.clone(), w_hh.transpose(1, 2),
                        acc_of(x.scalar_type()), places ? places->active : std::vector<int64_t>{});
    p.hbuf = gemm.in.data_ptr();
    p.slot = places ? places->slot.data_ptr<int64_t>() : nullptr;
  }
  run(how, p, dtype_of(x.scalar_type()), rnn_forward_persistent, rnn_forward_cuda, gemm.products());
  at::Tensor c_n = a.cell_state ? c.to(x.scalar_type()) : at::empty({0}, opt);
  return {out, h_n, c_n, saved};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
rnn_layer_backward_cuda(int64_t cell, const at::Tensor& x_, const at::Tensor& lengths_,
                        const std::optional<at::Tensor>& tokens, const std::optional<at::Tensor>& host_lengths,
                        const at::Tensor& h0, const std::optional<at::Tensor>& c0, const at::Tensor& w_ih_,
                        const at::Tensor& w_hh_,
                        const std::optional<at::Tensor>& b_ih, const std::optional<at::Tensor>& b_hh,
                        const std::optional<at::Tensor>& w_hr_, const at::Tensor& saved_,
                        const at::Tensor& grad_out_, const at::Tensor& grad_hn, const at::Tensor& grad_cn,
                        int64_t path) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  const c10::cuda::CUDAGuard guard(x_.device());
  const LayerArgs a(cell, x_, lengths_, tokens, host_lengths, h0, c0, w_ih_, w_hh_, b_ih, b_hh, w_hr_, path);
  const SavedLayout& L = a.layout;
  const at::Tensor x = x_.contiguous(), w_ih = w_ih_.contiguous();
  const at::Tensor w_hh = w_hh_.contiguous(), saved = saved_.contiguous(), grad_out = grad_out_.contiguous();
  const auto w_hr = contig(w_hr_);
  const auto opt = x.options();
  const Rows index(a, lengths_, tokens, host_lengths);
  const at::Tensor& lengths = index.lengths;
  const auto acc = acc_of(x.scalar_type());
  const int64_t rows = a.T * a.B;
  // The rows of saved and of the gate gradients (BackwardParams::token): with the lengths on the
  // host, the valid positions only, as the products below take them, each written by the
  // recurrence; else every position, the padded ones zero (the products read them).
  const int64_t R = index.tokens ? index.tokens->numel() : rows;
  a.check_backward(x, saved, R, grad_out, grad_hn, grad_cn);
  auto grads = [&](int64_t width) {
    return index.tokens ? at::empty({a.D, R, width}, opt) : at::zeros({a.D, R, width}, opt);
  };
  at::Tensor dgx = grads(a.G);
  at::Tensor dgh = a.bias_apart ? grads(a.G) : dgx;
  at::Tensor dH = a.proj ? grads(a.P) : at::Tensor();
  at::Tensor dm = a.proj ? at::empty({a.D, a.B, a.H}, opt) : at::Tensor();
  at::Tensor dh = grad_hn.to(acc, false, true).contiguous();
  at::Tensor dc = a.cell_state ? grad_cn.to(acc, false, true).contiguous() : at::Tensor();
  at::Tensor direct = a.direct ? at::empty({a.D, a.B, a.H}, opt.dtype(acc)) : at::Tensor();

  BackwardParams p{a.cell, a.T, a.B, a.D, a.H, a.P, L.K, a.proj, lengths.data_ptr<int64_t>(),
                   w_hh.data_ptr(), ptr(w_hr), saved.data_ptr(), grad_out.data_ptr(), dh.data_ptr(),
                   dc.defined() ? dc.data_ptr() : nullptr, dm.defined() ? dm.data_ptr() : nullptr,
                   dgx.data_ptr(), dgh.data_ptr(), dH.defined() ? dH.data_ptr() : nullptr,
                   direct.defined() ? direct.data_ptr() : nullptr};
  p.tuning = a.tuning;
  index.set_layout(p);
  // The partial sums that the persistent backward's reduce form exchanges (fp32; none elsewhere).
  const Recurrence how(a, x.scalar_type());
  const int64_t partials = how.persistent ? rnn_backward_persistent_partials(p, dtype_of(x.scalar_type())) : 0;
  at::Tensor part = partials > 0 ? at::empty({partials}, opt.dtype(at::kFloat)) : at::Tensor();
  p.part = part.defined() ? part.data_ptr() : nullptr;
  GemmProducts gemm;
  const auto places = how.gemm ? index.places(a, x) : std::nullopt;
  if (how.gemm) {
    gemm = GemmProducts(at::zeros({a.D, a.B, a.G}, opt), w_hh, acc,
                        places ? places->active : std::vector<int64_t>{});
    p.dgbuf = gemm.in.data_ptr();
    p.slot = places ? places->slot.data_ptr<int64_t>() : nullptr;
  }
  run(how, p, dtype_of(x.scalar_type()), rnn_backward_persistent, rnn_backward_cuda, gemm.products());

  // The products over the valid positions where they are known (x gathered; saved, dgx, dgh and
  // dH are in that layout already), else over all T*B.
  const at::Tensor x_rows = x.view({rows, a.I});
  const at::Tensor saved_rows = saved.view({a.D, R, L.K});
  auto [dx_rows, dw_ih, dw_hh, db_ih, db_hh, dw_hr] = weight_and_input_grads(
      a, index.tokens ? x_rows.index_select(0, *index.tokens) : x_rows, w_ih, saved_rows.narrow(2, L.h_prev, a.P),
      a.proj ? saved_rows.narrow(2, L.m, a.H) : at::Tensor(), dgx, dgh, dH);
  const at::Tensor dx = index.tokens ? at::zeros({rows, a.I}, opt).index_copy_(0, *index.tokens, dx_rows) : dx_rows;
  at::Tensor dc0 = a.cell_state ? dc.to(x.scalar_type()) : at::empty({0}, opt);
  return {dx.view({a.T, a.B, a.I}), dh.to(x.scalar_type()), dc0, dw_ih, dw_hh, db_ih, db_hh, dw_hr};
}

}  // namespace

#ifdef PACKEDRNN_EMULATE
TORCH_LIBRARY_IMPL(packedrnn_emu, CPU, m) {  // tests/test_cuda_op_emulated.py defines its schemas
#else
TORCH_LIBRARY_IMPL(packedrnn, CUDA, m) {
#endif
  m.impl("rnn_layer", &rnn_layer_cuda);
  m.impl("rnn_layer_backward", &rnn_layer_backward_cuda);
}

}  // namespace packedrnn
