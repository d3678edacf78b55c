"""Second derivatives (create_graph=True, then differentiate again) and torch.func's transforms, on
every backend: the compiled ops' backward recomputes through the reference where it is itself
differentiated (packedrnn/ops.py, _recompute_grads)."""

import pytest
import torch
from torch import nn
from torch.autograd import gradcheck, gradgradcheck
from torch.func import functional_call, grad, jacrev, vmap

from helpers import make_pair

CASES = [("LSTM", {}), ("LSTM", dict(proj_size=2)), ("GRU", {}), ("RNN_TANH", {})]


def _layers_ids(v):
    return f"L{v[0]}{'-bi' if v[1] else ''}"


@pytest.mark.parametrize("cell,kw", CASES, ids=[f"{c}{'-proj' if k else ''}" for c, k in CASES])
@pytest.mark.parametrize("shape", [(1, False), (2, True)], ids=_layers_ids)
def test_gradgradcheck(cell, kw, shape, device):
    """fp64 gradgradcheck of the output and state through x, h0 and two weights."""
    layers, bidirectional = shape
    torch.manual_seed(0)
    ours, _ = make_pair(cell, 2, 3, num_layers=layers, bidirectional=bidirectional, device=device, **kw)
    lengths = [3, 0, 2, 3]  # a zero, unsorted, a tie at T
    x = torch.randn(3, 4, 2, dtype=torch.float64, device=device, requires_grad=True)
    D = 2 if bidirectional else 1
    h0 = torch.randn(layers * D, 4, ours.proj_size or 3, dtype=torch.float64, device=device, requires_grad=True)
    names = ["weight_hh_l0", f"weight_ih_l{layers - 1}"]
    weights = [getattr(ours, n).detach().clone().requires_grad_() for n in names]

    def f(x, h0, w0, w1):
        hx = (h0, torch.zeros(layers * D, 4, 3, dtype=x.dtype, device=x.device)) if cell == "LSTM" else h0
        out, state = functional_call(ours, dict(zip(names, (w0, w1))), (x, hx), dict(lengths=lengths), strict=False)
        return out, state[0] if cell == "LSTM" else state

    assert gradcheck(f, (x, h0, *weights))
    assert gradgradcheck(f, (x, h0, *weights))


@pytest.mark.parametrize("ours_cls,theirs_cls", [("LSTM", nn.LSTM), ("GRU", nn.GRU)])
def test_grad_and_gradgrad_as_pytorch_tests_it(ours_cls, theirs_cls, device):
    """PyTorch's test_LSTM_grad_and_gradgrad / test_GRU_grad_and_gradgrad (test_nn.py), on ours:
    gradcheck and gradgradcheck over the input and every parameter, with and without bias."""
    hsize = 4
    inp = torch.rand(1, 3, hsize, dtype=torch.float64, device=device, requires_grad=True)
    for bias in (True, False):
        ours, _ = make_pair(ours_cls, hsize, hsize, bias=bias, device=device)
        params = [p.detach().clone().requires_grad_() for p in ours.parameters()]
        names = [n for n, _ in ours.named_parameters()]

        def f(inp, *ps):
            return functional_call(ours, dict(zip(names, ps)), (inp,))[0]

        assert gradcheck(f, (inp, *params))
        assert gradgradcheck(f, (inp, *params))


def test_second_derivative_equals_nn(device):
    """A gradient penalty's gradient (double backward) equals nn.LSTM's on the same batch."""
    torch.manual_seed(1)
    ours, theirs = make_pair("LSTM", 3, 4, num_layers=2, bidirectional=True, device=device)
    x = torch.randn(6, 3, 3, dtype=torch.float64, device=device, requires_grad=True)

    def penalty(module):
        out, _ = module(x)
        (gx,) = torch.autograd.grad(out.square().sum(), x, create_graph=True)
        return torch.autograd.grad(gx.square().sum(), list(module.parameters()))

    for a, b in zip(penalty(ours), penalty(theirs)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


def _loss(module, lengths):
    def loss(params, x):
        out, state = functional_call(module, params, (x,), dict(lengths=lengths))
        h = state[0] if isinstance(state, tuple) else state
        return out.square().sum() + h.sum()
    return loss


@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_torch_func_grad_and_jacrev_equal_backward(cell, device):
    torch.manual_seed(2)
    ours, _ = make_pair(cell, 3, 4, num_layers=2, bidirectional=True, dtype=torch.float32, device=device)
    lengths = torch.tensor([6, 0, 3, 6, 2])
    x = torch.randn(6, 5, 3, device=device)
    params = {k: v.detach() for k, v in ours.named_parameters()}
    loss = _loss(ours, lengths)

    x_leaf = x.clone().requires_grad_()
    loss(dict(ours.named_parameters()), x_leaf).backward()
    by_func = grad(loss)(params, x)
    for name, p in ours.named_parameters():
        torch.testing.assert_close(by_func[name], p.grad, rtol=0, atol=1e-5)
    torch.testing.assert_close(jacrev(loss, argnums=1)(params, x), x_leaf.grad, rtol=0, atol=1e-5)


def test_vmap_equals_a_loop(device):
    torch.manual_seed(3)
    ours, _ = make_pair("LSTM", 3, 4, bidirectional=True, dtype=torch.float32, device=device)
    lengths = torch.tensor([5, 2, 0])
    xs = torch.randn(4, 5, 3, 3, device=device)
    mapped = vmap(lambda x: ours(x, lengths=lengths)[0])(xs)
    looped = torch.stack([ours(x, lengths=lengths)[0] for x in xs])
    torch.testing.assert_close(mapped, looped, rtol=0, atol=1e-6)


def test_second_derivatives_ignore_nan_padding(device):
    """x's padding holds NaN: second derivatives through x and a weight stay finite and match those
    of the same call with zero padding (the op runs by token and never zeroes x for its backward)."""
    torch.manual_seed(0)
    ours, _ = make_pair("LSTM", 2, 3, device=device, dtype=torch.float64)
    lengths = torch.tensor([3, 0, 2, 1])
    clean = torch.randn(3, 4, 2, dtype=torch.float64, device=device)
    padded = clean.clone()
    for b, n in enumerate(lengths.tolist()):
        padded[n:, b] = float("nan")

    def grads(x):
        x = x.clone().requires_grad_()
        out, _ = ours(x, lengths=lengths)
        gx, gw = torch.autograd.grad(out.pow(2).sum(), (x, ours.weight_hh_l0), create_graph=True)
        (second,) = torch.autograd.grad(gw.pow(2).sum() + gx.pow(2).sum(), ours.weight_hh_l0)
        return gx, gw, second

    got, want = grads(padded), grads(clean)
    for g, w in zip(got, want):
        assert torch.isfinite(g).all()
        torch.testing.assert_close(g, w)
