"""PackedLSTM/PackedGRU/PackedRNN against nn.LSTM/nn.GRU/nn.RNN + pack_padded_sequence: outputs and
gradients."""

import itertools

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

from helpers import CELLS, LENGTH_PATTERNS, compare, make_pair, random_inputs

GRID = [
    (cell, layers, bidir, batch_first, bias, proj, with_hx, pattern)
    for cell, layers, bidir, batch_first, bias, proj, with_hx, pattern in itertools.product(
        CELLS, [1, 2, 3], [False, True], [False, True], [False, True], [0, 2],
        [False, True], LENGTH_PATTERNS)
    if not (cell != "LSTM" and proj)
]


def _case_id(case):
    cell, layers, bidir, bf, bias, proj, hx, pattern = case
    return (f"{cell}-L{layers}{'-bi' if bidir else ''}{'-bf' if bf else ''}{'' if bias else '-nobias'}"
            f"{f'-proj{proj}' if proj else ''}{'-hx' if hx else ''}-{pattern}")


def _check(case, dtype, record, device):
    cell, layers, bidir, batch_first, bias, proj, with_hx, pattern = case
    T, lengths = LENGTH_PATTERNS[pattern]
    kw = dict(num_layers=layers, bidirectional=bidir, batch_first=batch_first, bias=bias)
    if proj:
        kw["proj_size"] = proj
    torch.manual_seed(hash(_case_id(case)) % 2**31)
    ours, theirs = make_pair(cell, 3, 4, dtype=dtype, device=device, **kw)
    x, hx = random_inputs(ours, lengths, T, with_hx=with_hx)
    compare(ours, theirs, x, hx, lengths, dtype, record)


@pytest.mark.parametrize("case", GRID, ids=_case_id)
def test_grid_float64(case, device, record):
    _check(case, torch.float64, record, device)


# fp32: every cell/layout combination over three of the length patterns (the fp64 grid covers all).
GRID_FP32 = [c for c in GRID if c[-1] in ("shuffled", "ties", "max_below_T")]


@pytest.mark.parametrize("case", GRID_FP32, ids=_case_id)
def test_grid_float32(case, device, record):
    _check(case, torch.float32, record, device)


@pytest.mark.parametrize("cell", CELLS)
def test_lengths_as_list_tensor_and_int32_agree(cell, device):
    ours, _ = make_pair(cell, 3, 4, num_layers=2, bidirectional=True, device=device)
    lengths = [3, 6, 1, 5]
    x, _ = random_inputs(ours, lengths, 6, with_hx=False)
    ref = ours(x, lengths=lengths)[0]
    for form in (torch.tensor(lengths), torch.tensor(lengths, dtype=torch.int32), tuple(lengths),
                 torch.tensor(lengths, device=device)):
        assert torch.equal(ours(x, lengths=form)[0], ref)


@pytest.mark.parametrize("cell", CELLS)
def test_no_lengths_is_nn_rnn_on_the_padded_batch(cell, device):
    ours, theirs = make_pair(cell, 3, 4, num_layers=2, bidirectional=True, batch_first=True,
                             device=device)
    x = torch.randn(4, 5, 3, dtype=torch.float64, device=device)
    o1, s1 = ours(x)
    o2, s2 = theirs(x)
    torch.testing.assert_close(o1, o2, rtol=0, atol=1e-10)
    for a, b in zip(s1 if cell == "LSTM" else [s1], s2 if cell == "LSTM" else [s2]):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


@pytest.mark.parametrize("cell,proj", [("LSTM", 0), ("LSTM", 2), ("GRU", 0), ("RNN_TANH", 0), ("RNN_RELU", 0)])
@pytest.mark.parametrize("enforce_sorted", [False, True])
def test_packed_sequence_in_and_out(cell, proj, enforce_sorted, device):
    kw = dict(num_layers=2, bidirectional=True, **({"proj_size": proj} if proj else {}))
    ours, theirs = make_pair(cell, 3, 4, device=device, **kw)
    lengths = [6, 4, 4, 1] if enforce_sorted else [4, 6, 1, 4]
    x, hx = random_inputs(ours, lengths, 6, with_hx=True)
    packed = pack_padded_sequence(x, torch.tensor(lengths), enforce_sorted=enforce_sorted)
    p1, s1 = ours(packed, hx)
    p2, s2 = theirs(packed, hx)
    assert torch.equal(p1.batch_sizes, p2.batch_sizes)
    for a, b in ((p1.sorted_indices, p2.sorted_indices), (p1.unsorted_indices, p2.unsorted_indices)):
        assert (a is None and b is None) or torch.equal(a, b)
    torch.testing.assert_close(p1.data, p2.data, rtol=0, atol=1e-10)
    s1, s2 = (s1, s2) if cell == "LSTM" else ((s1,), (s2,))
    for a, b in zip(s1, s2):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)
    g1 = torch.autograd.grad(p1.data.sum() + s1[0].sum(), [x] + list(ours.parameters()),
                             retain_graph=True)
    g2 = torch.autograd.grad(p2.data.sum() + s2[0].sum(), [x] + list(theirs.parameters()))
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


@pytest.mark.parametrize("cell", CELLS)
def test_unbatched_input(cell, device):
    ours, theirs = make_pair(cell, 3, 4, num_layers=2, bidirectional=True, device=device)
    x = torch.randn(5, 3, dtype=torch.float64, device=device)
    o1, s1 = ours(x)
    o2, s2 = theirs(x)
    torch.testing.assert_close(o1, o2, rtol=0, atol=1e-10)
    # A length shorter than T: the same as nn.LSTM on the first `length` steps, zeros after.
    o3, s3 = ours(x, lengths=3)
    o4, s4 = theirs(x[:3])
    torch.testing.assert_close(o3[:3], o4, rtol=0, atol=1e-10)
    assert torch.equal(o3[3:], torch.zeros_like(o3[3:]))
    s3, s4 = (s3, s4) if cell == "LSTM" else ((s3,), (s4,))
    for a, b in zip(s3, s4):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


@pytest.mark.parametrize("cell,proj", [("LSTM", 0), ("LSTM", 50), ("GRU", 0), ("RNN_TANH", 0), ("RNN_RELU", 0)])
def test_float32_at_sizes_the_grid_does_not_reach(cell, proj, device):
    """fp32 at sizes the tiny grid does not reach (H = 150: products whose dimensions are not
    multiples of the BLAS and CUDA tiles; 37 rows; about 600 tokens summed in the weight
    gradients), two bidirectional layers, against nn + packing."""
    kw = dict(num_layers=2, bidirectional=True, batch_first=True, **({"proj_size": proj} if proj else {}))
    torch.manual_seed(5)
    ours, theirs = make_pair(cell, 70, 150, dtype=torch.float32, device=device, **kw)
    g = torch.Generator().manual_seed(6)
    lengths = torch.randint(1, 31, (37,), generator=g).tolist()
    lengths[0] = 30
    x, hx = random_inputs(ours, lengths, 30, with_hx=True)
    compare(ours, theirs, x, hx, lengths, torch.float32)
