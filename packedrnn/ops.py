"""The compiled custom ops (schemas in csrc/ops.cpp): fake kernels, autograd, and the layer call.

torch.ops.packedrnn.token_index        the valid positions of host lengths (the token layout)
torch.ops.packedrnn.rnn_layer          one layer, both directions, forward
torch.ops.packedrnn.rnn_layer_backward its gradients
Shapes are in csrc/ops.cpp. The fake kernels derive every shape from input shapes alone, never
from the values in `lengths`, so torch.compile traces one graph for any lengths. The one size
that only values give, the number of valid positions N = sum(lengths), is token_index's output
size (an unbacked size under torch.compile); rnn_layer takes it from its `tokens` input.

Autograd: rnn_layer's Autograd kernel (_autograd_kernel) decides when a call runs whether it keeps
`saved` for a backward; the backward is the compiled backward op, or, where the backward is itself
differentiated (create_graph=True, torch.func), a recompute through the reference.
"""

from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor

from . import _build
from .cells import BY_CODE, CELLS, Cell
from .validation import fail

_registered = False
# What the CPU backend serves: the op's float32 and float64, and half types through float32
# (packedrnn.functional casts them).
CPU_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


def fake_token_index(lengths, T):
    """token_index's output: N = sum(lengths) positions, a size only the values give."""
    return lengths.new_empty(torch.library.get_ctx().new_dynamic_size())


def _same_device(x, **tensors):
    """The fake kernels' one check: a tensor on another device (a meta tensor beside real ones
    sends the call here) must not get outputs made on x's."""
    for name, t in tensors.items():
        if t is not None and t.device != x.device:
            fail(f"{name} is on {t.device}, x is on {x.device}: they must match")


def fake_layer(cell, x, lengths, tokens, host_lengths, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, train, path):
    """rnn_layer's output shapes: `saved` [D, N, K] with tokens [N], else [D, T, B, K]."""
    _same_device(x, lengths=lengths, tokens=tokens, h0=h0, c0=c0, w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh,
                 w_hr=w_hr)
    spec = BY_CODE.get(cell)
    if spec is None:
        fail(f"cell = {cell} is no cell's code ({', '.join(f'{c.name} {c.code}' for c in CELLS.values())})")
    T, B = x.shape[0], x.shape[1]
    D, G, P = w_ih.shape[0], w_ih.shape[1], w_hh.shape[2]
    H = G // spec.gates
    out = x.new_empty(T, B, D * P)
    h_n = x.new_empty(D, B, P)
    c_n = x.new_empty(D, B, H) if spec.cell_state else x.new_empty(0)
    K = spec.saved_width(H, P, w_hr is not None)
    if not train:
        saved = x.new_empty(0)
    elif tokens is not None:
        saved = x.new_empty(D, tokens.shape[0], K)
    else:
        saved = x.new_empty(D, T, B, K)
    return out, h_n, c_n, saved


def fake_layer_backward(cell, x, lengths, tokens, host_lengths, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, saved,
                        grad_out, grad_hn, grad_cn, path):
    _same_device(x, lengths=lengths, tokens=tokens, h0=h0, c0=c0, w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh,
                 w_hr=w_hr, saved=saved, grad_out=grad_out, grad_hn=grad_hn, grad_cn=grad_cn)
    def like(t):
        return x.new_empty(t.shape) if t is not None else x.new_empty(0)
    # Contiguous, as the kernels return them (x may be a view: batch_first's transpose).
    return tuple(like(t) for t in (x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr))


def reference_layer(cell: int, x: Tensor, lengths: Tensor, h0: Tensor, c0: Optional[Tensor], w_ih: Tensor,
                    w_hh: Tensor, b_ih: Optional[Tensor], b_hh: Optional[Tensor], w_hr: Optional[Tensor]):
    """What one rnn_layer call computes, through packedrnn.reference (differentiable, any device):
    (out, h_n) and c_n for cells with a cell state, in the op's shapes (csrc/ops.cpp). Like the op
    it never reads x's padding (which may hold NaN: an op that runs by token gets x as given)."""
    from . import reference
    spec = BY_CODE[cell]
    x = reference.zero_padding(x, lengths)
    outs, hs, cs = [], [], []
    for d in range(w_ih.shape[0]):
        def pick(t):
            return None if t is None else t[d]
        out, h, c = reference.layer(spec, x, lengths, h0[d], pick(c0), w_ih[d], w_hh[d], pick(b_ih), pick(b_hh),
                                    pick(w_hr), reverse=d == 1)
        outs.append(out)
        hs.append(h)
        cs.append(c)
    results = (torch.cat(outs, dim=-1), torch.stack(hs))
    return results + (torch.stack(cs),) if spec.cell_state else results


def _recompute_grads(cell: int, inputs, grad_out: Tensor, grad_hn: Tensor, grad_cn: Tensor):
    """The gradients of one rnn_layer call, [dx, None, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, dw_hr]
    for inputs (x, lengths, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr), as differentiable functions of
    the inputs and the incoming gradients: reference_layer under torch.func.vjp, which serves both
    create_graph=True (autograd records it) and torch.func's transforms (a level of its own). The
    backward's path wherever the backward is itself differentiated, so that second derivatives
    exist on every backend; first-order training never comes here."""
    present = [i for i, t in enumerate(inputs) if t is not None and i != 1]

    def layer(*tensors):
        rebuilt = list(inputs)
        for i, t in zip(present, tensors):
            rebuilt[i] = t
        return reference_layer(cell, *rebuilt)

    _, pullback = torch.func.vjp(layer, *(inputs[i] for i in present))
    upstream = (grad_out, grad_hn) + ((grad_cn,) if BY_CODE[cell].cell_state else ())
    grads = [None] * len(inputs)
    for i, g in zip(present, pullback(upstream)):
        grads[i] = g
    return grads


def _setup_context(ctx, inputs, output):
    """rnn_layer's autograd: what its backward keeps (the op's own outputs, the call's index)."""
    cell, x, lengths, tokens, host_lengths, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, train, path = inputs
    ctx.cell, ctx.path = cell, path
    # The call's index travels to the backward as it is: nothing is rebuilt or copied again.
    ctx.mark_non_differentiable(output[3])
    ctx.save_for_backward(x, lengths, tokens, host_lengths, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, output[3])


def _backward(ctx, grad_out, grad_hn, grad_cn, _grad_saved):
    """The compiled backward op; the reference recomputed where autograd records the backward."""
    x, lengths, tokens, host_lengths, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, saved = ctx.saved_tensors
    if torch.is_grad_enabled():  # create_graph=True or torch.func: gradients that differentiate
        dx, _, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, dw_hr = _recompute_grads(
            ctx.cell, (x, lengths, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr), grad_out, grad_hn, grad_cn)
        return None, dx, None, None, None, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, dw_hr, None, None
    grads = torch.ops.packedrnn.rnn_layer_backward(
        ctx.cell, x, lengths, tokens, host_lengths, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, saved,
        grad_out.contiguous(), grad_hn.contiguous(), grad_cn.contiguous(), ctx.path)
    dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, dw_hr = grads

    def present(g, t):
        return g if t is not None else None
    return (None, dx, None, None, None, dh0, present(dc0, c0), dw_ih, dw_hh, present(db_ih, b_ih),
            present(db_hh, b_hh), present(dw_hr, w_hr), None, None)


class _Layer(torch.autograd.Function):
    """rnn_layer where autograd records it (_autograd_kernel), and under torch.func's transforms
    (layer), which take an autograd.Function with setup_context and a vmap rule."""

    @staticmethod
    def forward(*args):
        return torch.ops.packedrnn.rnn_layer(*args)  # autograd is off here: _autograd_kernel passes it on

    setup_context = staticmethod(_setup_context)
    backward = staticmethod(_backward)

    @staticmethod
    def vmap(info, in_dims, cell, *args):
        """A loop over the mapped dimension, one op call per slice (the op has no batching rule)."""
        for name, dim in zip(("lengths", "tokens", "host_lengths"), in_dims[2:5]):
            if dim is not None:
                fail(f"vmap over {name} is not supported: map over the input and parameters, with one "
                     "lengths for every slice")
        slices = []
        for i in range(info.batch_size):
            one = [a if dim is None else a.select(dim, i) for a, dim in zip(args, in_dims[1:])]
            slices.append(torch.ops.packedrnn.rnn_layer(cell, *one))
        return tuple(torch.stack(parts) for parts in zip(*slices)), (0, 0, 0, 0)


def _autograd_kernel(cell, x, lengths, tokens, host_lengths, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, train, path):
    """rnn_layer's Autograd kernel. Whether a call keeps `saved` for a backward is decided here, when
    the call runs (autograd records it, or not), whatever `train` a trace or an exported graph
    holds: a module traced or exported in grad mode runs inference without the backward's buffers,
    and one traced under no_grad can still be trained."""
    tensors = (x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
        return _Layer.apply(cell, x, lengths, tokens, host_lengths, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, True, path)
    with torch._C._AutoDispatchBelowAutograd():
        return torch.ops.packedrnn.rnn_layer(cell, x, lengths, tokens, host_lengths, h0, c0, w_ih, w_hh, b_ih,
                                             b_hh, w_hr, train, path)


_library = None  # holds the Autograd kernel's registration for the life of the process


def _register() -> None:
    global _registered
    if _registered:
        return
    _registered = True

    torch.library.register_fake("packedrnn::token_index", fake_token_index)
    torch.library.register_fake("packedrnn::rnn_layer", fake_layer)

    torch.library.register_fake("packedrnn::rnn_layer_backward", fake_layer_backward)

    global _library
    _library = torch.library.Library("packedrnn", "IMPL")
    _library.impl("rnn_layer", _autograd_kernel, "Autograd")


def available(device_type: str) -> bool:
    """Whether the compiled op serves `device_type` (builds the extension on first use)."""
    if not _build.load():
        return False
    _register()
    return torch._C._dispatch_has_kernel_for_dispatch_key("packedrnn::rnn_layer", device_type.upper())


def unavailable_reason(device_type: str, dtype: Optional[torch.dtype] = None) -> str:
    if not _build.load():
        return _build.unavailable_reason()
    if device_type == "cpu" and available("cpu") and dtype is not None and dtype not in CPU_DTYPES:
        return f"the CPU op takes float32, float64, bfloat16 and float16 (through float32), not {dtype}"
    return f"the extension was built without {device_type} kernels"


def _stack(ts: Sequence[Optional[Tensor]]) -> Optional[Tensor]:
    # One direction: a view, not a copy.
    return None if ts[0] is None else (ts[0].unsqueeze(0) if len(ts) == 1 else torch.stack(list(ts)))


def layer(cell: Cell, x: Tensor, lengths: Tensor, tokens: Optional[Tensor], host_lengths: Optional[Tensor],
          h0: Tensor, c0: Optional[Tensor], groups, path: int = 0) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
    """One layer through the op. x [T, B, I] contiguous with zero padding; lengths int64 [B] on x's
    device; tokens, host_lengths: the call's index (csrc/ops.cpp; packedrnn.plan.CallLengths);
    h0 [D, B, P]; c0 [D, B, H] (None without a cell state); groups = [(w_ih, w_hh, b_ih, b_hh,
    w_hr)] per direction; path: the forced CUDA choices (packedrnn.plan.path()).
    Returns out [T, B, D*P], h_n [D, B, P], c_n [D, B, H] (None without a cell state)."""
    w_ih, w_hh, b_ih, b_hh, w_hr = (_stack([g[i] for g in groups]) for i in range(5))
    # train=False: the op's autograd keeps `saved` where it records the call (_autograd_kernel).
    # torch.func's transforms take the autograd.Function itself, before the dispatcher.
    functorch = torch._C._are_functorch_transforms_active()
    out, h_n, c_n, _ = (_Layer.apply if functorch else torch.ops.packedrnn.rnn_layer)(
        cell.code, x, lengths, tokens, host_lengths, h0.contiguous(),
        None if c0 is None else c0.contiguous(), w_ih, w_hh, b_ih, b_hh, w_hr, functorch, path)
    return out, h_n, (c_n if cell.cell_state else None)


_build.load_aot_at_import()
if _build.loaded():
    _register()
