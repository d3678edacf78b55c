"""Padding never influences a result; zero-length rows pass their initial state through."""

import pytest
import torch

from helpers import grads, make_pair, random_inputs, run_ours, run_torch

CASES = [("LSTM", {}), ("LSTM", {"proj_size": 2}), ("GRU", {}), ("RNN_TANH", {}), ("RNN_RELU", {})]


@pytest.mark.parametrize("cell,kw", CASES)
@pytest.mark.parametrize("poison", [float("nan"), float("inf"), -float("inf"), 1e30])
def test_padding_values_change_nothing(cell, kw, poison, device):
    ours, _ = make_pair(cell, 3, 4, num_layers=2, bidirectional=True, batch_first=True, device=device,
                        **kw)
    lengths = [2, 5, 0, 3]
    clean, hx = random_inputs(ours, lengths, 5, with_hx=True, pad_value=0.0)
    dirty = clean.detach().clone()
    for b, n in enumerate(lengths):
        dirty[b, n:] = poison
    dirty.requires_grad_(True)
    o1, s1 = run_ours(ours, clean, hx, lengths)
    o2, s2 = run_ours(ours, dirty, hx, lengths)
    assert torch.equal(o1, o2)
    for a, b in zip(s1, s2):
        assert torch.equal(a, b)
    gi1, gw1 = grads(ours, clean, hx, o1, s1)
    gi2, gw2 = grads(ours, dirty, hx, o2, s2)
    for a, b in zip(gi1 + gw1, gi2 + gw2):
        assert torch.equal(a, b)
    for b, n in enumerate(lengths):
        assert torch.equal(o2[b, n:], torch.zeros_like(o2[b, n:]))  # exactly zero past the length
        assert torch.equal(gi2[0][b, n:], torch.zeros_like(gi2[0][b, n:]))  # no gradient there


@pytest.mark.parametrize("cell,kw", CASES)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_zero_length_rows(cell, kw, bidirectional, device):
    ours, _ = make_pair(cell, 3, 4, num_layers=2, bidirectional=bidirectional, device=device, **kw)
    lengths = [0, 4, 0, 2]
    x, hx = random_inputs(ours, lengths, 4, with_hx=True)
    out, states = run_ours(ours, x, hx, lengths)
    h0s = list(hx) if isinstance(hx, tuple) else [hx]
    for b in (0, 2):
        assert torch.equal(out[:, b], torch.zeros_like(out[:, b]))
        for s, s0 in zip(states, h0s):
            assert torch.equal(s[:, b], s0[:, b])  # h_n = h0, c_n = c0
    (gx,) = torch.autograd.grad(out.sum(), [x], retain_graph=True)
    assert torch.equal(gx[:, 0], torch.zeros_like(gx[:, 0]))
    # A loss on h_n of a zero-length row reaches h0 of that row with gradient exactly 1,
    # and nothing else.
    loss = sum(s[:, 0].sum() for s in states)
    g = torch.autograd.grad(loss, [x] + h0s + list(ours.parameters()), allow_unused=True)
    assert torch.equal(g[0], torch.zeros_like(g[0]))
    for g0 in g[1:1 + len(h0s)]:
        assert torch.equal(g0[:, 0], torch.ones_like(g0[:, 0]))
        assert torch.equal(g0[:, 1:], torch.zeros_like(g0[:, 1:]))
    for gw in g[1 + len(h0s):]:
        assert gw is None or torch.equal(gw, torch.zeros_like(gw))


@pytest.mark.parametrize("cell,kw", CASES)
@pytest.mark.parametrize("T,lengths", [(5, []), (0, [0, 0, 0])], ids=["no-rows", "no-steps"])
def test_empty_batch_and_no_steps(cell, kw, T, lengths, device):
    """A batch of no rows, or of T = 0 (every length 0: a loader that pads to the longest of empty
    sequences): the right shapes, out empty, h_n = h0 and c_n = c0 with gradient exactly 1 to them.
    (nn.LSTM takes the first, and refuses the second.)"""
    ours, _ = make_pair(cell, 3, 4, num_layers=2, bidirectional=True, batch_first=True, device=device, **kw)
    x, hx = random_inputs(ours, lengths, T, with_hx=True)
    out, states = run_ours(ours, x, hx, lengths)
    h0s = list(hx) if isinstance(hx, tuple) else [hx]
    assert out.shape == (len(lengths), T, 2 * (kw.get("proj_size") or 4))
    for s, s0 in zip(states, h0s):
        assert torch.equal(s, s0)
    g = torch.autograd.grad(sum(s.sum() for s in states), h0s)
    for g0 in g:
        assert torch.equal(g0, torch.ones_like(g0))


@pytest.mark.parametrize("cell,kw", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_nan_in_valid_input_propagates_like_nn(cell, kw, dtype, device):
    """A NaN at a valid position spoils what nn.LSTM/GRU spoils (that row's later outputs and its
    final state), and nothing else: padding is ignored, a bad value inside a sequence is not."""
    ours, theirs = make_pair(cell, 3, 4, dtype=dtype, batch_first=True, device=device, **kw)
    lengths = [5, 3, 4]
    x, _ = random_inputs(ours, lengths, 5, with_hx=False, pad_value=0.0)
    x = x.detach().clone()
    x[1, 1, 0] = float("nan")
    o1, s1 = run_ours(ours, x, None, lengths)
    o2, s2 = run_torch(theirs, x, None, lengths)
    assert torch.equal(torch.isnan(o1), torch.isnan(o2))
    for a, b in zip(s1, s2):
        assert torch.equal(torch.isnan(a), torch.isnan(b))
    assert torch.isnan(o1[1, 1:3]).all() and not torch.isnan(o1[[0, 2]]).any()
