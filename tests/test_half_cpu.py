"""bf16 and fp16 on the CPU: the CPU op through fp32 (results and gradients in the caller's dtype),
and torch.autocast("cpu") returning what nn + packing returns there (fp32)."""

import pytest
import torch

import packedrnn
from helpers import CELLS, OP_DEVICES, make_pair, random_inputs, run_ours, run_torch

pytestmark = pytest.mark.skipif("cpu" not in OP_DEVICES, reason="the compiled CPU op is not built")
LENGTHS = [6, 0, 3, 6, 2]


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_types_run_the_cpu_op_in_fp32(cell, dtype):
    assert packedrnn.backend("cpu", dtype) == "cpu"
    torch.manual_seed(0)
    exact, _ = make_pair(cell, 3, 4, dtype=torch.float64, num_layers=2, bidirectional=True)
    half, _ = make_pair(cell, 3, 4, dtype=dtype, num_layers=2, bidirectional=True)
    half.load_state_dict(exact.state_dict())
    x, _ = random_inputs(exact, LENGTHS, 6, with_hx=False, pad_value=0.0)
    xh = x.detach().to(dtype).requires_grad_()
    out, states = run_ours(half, xh, None, LENGTHS)
    assert out.dtype == dtype and all(s.dtype == dtype for s in states)
    # Equal to the fp32 op on the same (rounded) values, rounded once at the end.
    with torch.no_grad():
        fp32 = half.float()
        want, _ = run_ours(fp32, xh.float(), None, LENGTHS)
        half.to(dtype)
    torch.testing.assert_close(out, want.to(dtype), rtol=0, atol=0)
    out.float().sum().backward()
    assert xh.grad.dtype == dtype and all(p.grad.dtype == dtype for p in half.parameters())
    assert not xh.grad[:, 1].any()  # the zero-length row (time-major)


@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_cpu_autocast_returns_fp32_as_nn_with_packing(cell):
    torch.manual_seed(1)
    ours, theirs = make_pair(cell, 3, 4, dtype=torch.float32)
    lengths = [6, 3, 6, 2]
    x, _ = random_inputs(ours, lengths, 6, with_hx=False, pad_value=0.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, _ = run_ours(ours, x, None, lengths)
        theirs_dtype = run_torch(theirs, x, None, lengths)[0].dtype
    assert out.dtype == theirs_dtype == torch.float32
    # nn's packed path rounds some products to bf16 under autocast even so; ours is fp32 throughout.
    torch.testing.assert_close(out, run_torch(theirs, x, None, lengths)[0], rtol=0, atol=1e-5)
