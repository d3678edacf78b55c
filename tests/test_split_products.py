"""The experiment PACKEDRNN_GEMM=bf16x6 (csrc/layer_gemms.h): the fp32 products around the
recurrence as six bf16 piece products. On the CPU the same pieces are multiplied in fp32 (their
products are exact there), so these tests check the decomposition's accuracy in every CI run;
on a GPU they check cuBLAS's bf16 products with fp32 accumulation."""

import pytest
import torch

from helpers import OP_DEVICES, TOL, compare, make_pair, random_inputs, run_ours, run_torch

pytestmark = pytest.mark.skipif(not OP_DEVICES, reason="the compiled ops are not built")

CASES = [  # cell, module keywords
    ("LSTM", dict(num_layers=2, bidirectional=True)),
    ("LSTM", dict(num_layers=1, proj_size=50)),
    ("GRU", dict(num_layers=2, bidirectional=True)),
    ("LSTM", dict(num_layers=1, bias=False)),
]


def _pair(cell, kw, device, seed=5):
    torch.manual_seed(seed)
    return make_pair(cell, 70, 150, dtype=torch.float32, device=device, batch_first=True, **kw)


def _lengths():
    g = torch.Generator().manual_seed(6)
    lengths = torch.randint(1, 31, (37,), generator=g).tolist()
    lengths[0] = 30
    return lengths


@pytest.mark.parametrize("op_device", OP_DEVICES)
@pytest.mark.parametrize("cell,kw", CASES)
@pytest.mark.parametrize("slice_elems,tokens", [("", ""), ("3000", ""), ("3000", "1")])
def test_matches_nn_in_fp32(op_device, cell, kw, slice_elems, tokens, monkeypatch):
    """Within the fp32 tolerances of nn + packing, also when the products run in slices of the
    token rows (3000 elements: several slices in every product), and on CUDA over all T*B rows
    or, with PACKEDRNN_TOKENS=1, the valid ones (the CPU op always takes the valid ones)."""
    monkeypatch.setenv("PACKEDRNN_BACKEND", op_device)
    monkeypatch.setenv("PACKEDRNN_GEMM", "bf16x6")
    monkeypatch.setenv("PACKEDRNN_GEMM_SLICE", slice_elems)
    monkeypatch.setenv("PACKEDRNN_TOKENS", tokens)
    ours, theirs = _pair(cell, kw, op_device)
    lengths = _lengths()
    x, hx = random_inputs(ours, lengths, 30, with_hx=True)
    compare(ours, theirs, x, hx, lengths, torch.float32)


@pytest.mark.parametrize("op_device", OP_DEVICES)
def test_takes_effect_and_slices_agree(op_device, monkeypatch):
    """The switch changes the arithmetic (so the tests above test it), and slicing changes only
    the order of fp32 additions."""
    monkeypatch.setenv("PACKEDRNN_BACKEND", op_device)
    ours, _ = _pair("LSTM", dict(num_layers=2, bidirectional=True), op_device)
    lengths = _lengths()
    x, hx = random_inputs(ours, lengths, 30, with_hx=True)
    runs = {}
    for mode, slice_elems in [("", ""), ("bf16x6", ""), ("bf16x6", "3000")]:
        monkeypatch.setenv("PACKEDRNN_GEMM", mode)
        monkeypatch.setenv("PACKEDRNN_GEMM_SLICE", slice_elems)
        out, _ = run_ours(ours, x, hx, lengths)
        x_grad, = torch.autograd.grad(out.sum(), [x])
        runs[(mode, slice_elems)] = (out.detach(), x_grad)
    plain, split, sliced = runs.values()
    assert not torch.equal(plain[0], split[0])
    for a, b in zip(split, sliced):
        torch.testing.assert_close(a, b, rtol=0, atol=TOL[torch.float32]["out"])


@pytest.mark.parametrize("op_device", OP_DEVICES)
def test_inf_in_the_padding_changes_nothing(op_device, monkeypatch):
    """Inf and NaN in the padding change nothing. (An Inf at a real position is the switch's known
    difference, csrc/layer_gemms.h: that row turns NaN where nn's gates saturate; other rows are
    untouched, which is checked here.)"""
    monkeypatch.setenv("PACKEDRNN_BACKEND", op_device)
    monkeypatch.setenv("PACKEDRNN_GEMM", "bf16x6")
    ours, theirs = _pair("LSTM", dict(num_layers=2, bidirectional=True), op_device)
    lengths = _lengths()
    x, hx = random_inputs(ours, lengths, 30, with_hx=True, pad_value=float("inf"))
    with torch.no_grad():
        x[1:, 29] = float("nan")  # the padding of every row shorter than 30 (row 0 is 30 long)
        x[1:, 29][torch.tensor(lengths[1:]) == 30] = 0.5
        x[0, 3, 5] = float("inf")
        o1, s1 = run_ours(ours, x, hx, lengths)
        o2, s2 = run_torch(theirs, x, hx, lengths)
    torch.testing.assert_close(o1[1:], o2[1:], rtol=0, atol=TOL[torch.float32]["out"])
    for a, b in zip(s1, s2):
        torch.testing.assert_close(a[:, 1:], b[:, 1:], rtol=0, atol=TOL[torch.float32]["out"])
