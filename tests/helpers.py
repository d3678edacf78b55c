"""Shared pieces of the test suite: paired modules, the torch ground truth, tolerances."""

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import packedrnn
from packedrnn import ops

# Every backend that runs here, with its device: the reference always, the compiled ops when built.
HAS_CUDA = torch.cuda.is_available() and ops.available("cuda")
# "cuda" runs the persistent kernels where they fit, "cuda-per-step" the per-step kernels only.
BACKENDS = [("reference", "cpu")] + ([("cpu", "cpu")] if ops.available("cpu") else []) + \
    ([("cuda", "cuda"), ("cuda-per-step", "cuda")] if HAS_CUDA else [])
OP_DEVICES = ([] if not ops.available("cpu") else ["cpu"]) + (["cuda"] if HAS_CUDA else [])

# docs/ARCHITECTURE.md, "Tolerances": absolute (rtol 0) on small test shapes.
TOL = {
    torch.float64: dict(out=1e-10, input_grad=1e-10, weight_grad=1e-10),
    torch.float32: dict(out=1e-5, input_grad=1e-5, weight_grad=2e-4),
}

LENGTH_PATTERNS = {  # (T, lengths)
    "sorted": (6, [6, 5, 4, 2, 1]),
    "shuffled": (6, [2, 6, 1, 5, 3]),
    "ties": (6, [4, 2, 4, 6, 2]),
    "all_T": (6, [6, 6, 6, 6, 6]),
    "all_1": (6, [1, 1, 1, 1, 1]),
    "B1": (6, [4]),
    "max_below_T": (7, [3, 1, 4, 2, 4]),
}


# Every cell (packedrnn.cells): the tests run each of them.
CELLS = ["LSTM", "GRU", "RNN_TANH", "RNN_RELU"]


def make_pair(cell, input_size, hidden_size, dtype=torch.float64, device="cpu", **kw):
    """(ours, torch's) with the same state_dict; cell is a packedrnn.cells name."""
    ours_cls, theirs_cls = {"LSTM": (packedrnn.PackedLSTM, nn.LSTM), "GRU": (packedrnn.PackedGRU, nn.GRU),
                            "RNN_TANH": (packedrnn.PackedRNN, nn.RNN), "RNN_RELU": (packedrnn.PackedRNN, nn.RNN)}[cell]
    if cell.startswith("RNN_"):
        kw = dict(kw, nonlinearity=cell[4:].lower())
    ours = ours_cls(input_size, hidden_size, dtype=dtype, device=device, **kw)
    theirs = theirs_cls(input_size, hidden_size, dtype=dtype, device=device, **kw)
    theirs.load_state_dict(ours.state_dict())
    return ours, theirs


def random_inputs(module, lengths, T, *, with_hx, pad_value=float("nan"), seed=0):
    """x with `pad_value` in the padding, and hx (or None), all requiring grad."""
    g = torch.Generator().manual_seed(seed)
    B = len(lengths)
    p = next(module.parameters())
    D = 2 if module.bidirectional else 1
    P = module.proj_size or module.hidden_size
    x = torch.randn(B, T, module.input_size, generator=g, dtype=p.dtype).to(p.device)
    for b, n in enumerate(lengths):
        x[b, n:] = pad_value
    if not module.batch_first:
        x = x.transpose(0, 1).contiguous()
    x.requires_grad_(True)
    hx = None
    if with_hx:
        h0 = torch.randn(module.num_layers * D, B, P, generator=g, dtype=p.dtype).to(p.device)
        h0.requires_grad_(True)
        if isinstance(module, (nn.LSTM, packedrnn.PackedLSTM)):
            c0 = torch.randn(module.num_layers * D, B, module.hidden_size, generator=g,
                             dtype=p.dtype).to(p.device).requires_grad_(True)
            hx = (h0, c0)
        else:
            hx = h0
    return x, hx


def _states(state):
    return list(state) if isinstance(state, tuple) else [state]


def loss_of(out, state, seed=1):
    """A loss that weights every output and state element differently."""
    g = torch.Generator().manual_seed(seed)
    total = 0
    for t in [out] + _states(state):
        w = torch.randn(t.shape, generator=g, dtype=t.dtype).to(t.device)
        total = total + (t * w).sum()
    return total


def run_ours(module, x, hx, lengths):
    out, state = module(x, hx, lengths=lengths)
    return out, _states(state)


def run_torch(module, x, hx, lengths):
    """nn.LSTM/GRU/RNN + pack_padded_sequence(enforce_sorted=False) + pad_packed_sequence."""
    T = x.shape[1] if module.batch_first else x.shape[0]
    packed = pack_padded_sequence(x, torch.as_tensor(lengths).cpu(), batch_first=module.batch_first,
                                  enforce_sorted=False)
    out, state = module(packed, hx)
    out, _ = pad_packed_sequence(out, batch_first=module.batch_first, total_length=T)
    return out, _states(state)


def grads(module, x, hx, out, states):
    leaves = [x] + ([] if hx is None else _states(hx)) + list(module.parameters())
    gs = torch.autograd.grad(loss_of(out, tuple(states)), leaves, allow_unused=True)
    n_in = 1 + (0 if hx is None else len(_states(hx)))
    return list(gs[:n_in]), list(gs[n_in:])


def max_diff(a, b):
    return (a - b).abs().max().item() if a.numel() else 0.0


def compare(ours, theirs, x, hx, lengths, dtype, record=None):
    """Forward and backward of both; assert every result within the tolerances of docs/ARCHITECTURE.md."""
    tol = TOL[dtype]
    o1, s1 = run_ours(ours, x, hx, lengths)
    o2, s2 = run_torch(theirs, x, hx, lengths)
    errs = {"out": max([max_diff(o1, o2)] + [max_diff(a, b) for a, b in zip(s1, s2)])}
    i1, w1 = grads(ours, x, hx, o1, s1)
    i2, w2 = grads(theirs, x, hx, o2, s2)
    # Padded input positions: torch's grad is 0 there, ours must be exactly 0 too.
    errs["input_grad"] = max(max_diff(a, b) for a, b in zip(i1, i2))
    errs["weight_grad"] = max(max_diff(a, b) for a, b in zip(w1, w2))
    if record is not None:
        for k, v in errs.items():
            record[(dtype, k)] = max(record.get((dtype, k), 0.0), v)
    for k, v in errs.items():
        assert v <= tol[k], f"{k} differs by {v:.3g} > {tol[k]:.1g}"
    return o1, s1, i1, w1


def assert_same_results_and_grads(got, want, leaves_got, leaves_want, atol):
    """Outputs equal, and the gradients of their sum with respect to each side's leaves."""
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=0, atol=atol)
    g1 = torch.autograd.grad(sum(t.sum() for t in got), list(leaves_got))
    g2 = torch.autograd.grad(sum(t.sum() for t in want), list(leaves_want))
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=0, atol=atol)
