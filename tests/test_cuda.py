"""CUDA-only checks (skipped without a GPU): half precision, repeatability, no host sync, autocast,
agreement with the CPU op. The equivalence, padding and gradcheck suites run on CUDA through the
`device` fixture (conftest.py)."""

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import packedrnn
from helpers import HAS_CUDA, OP_DEVICES, grads, make_pair, random_inputs, run_ours, run_torch

pytestmark = pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA and the compiled CUDA ops")

CASES = [("LSTM", {}), ("LSTM", {"proj_size": 16}), ("GRU", {})]


def _packed_run(module, x, lengths):
    packed = pack_padded_sequence(x, torch.as_tensor(lengths), batch_first=True, enforce_sorted=False)
    out, state = module(packed)
    out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
    return out, list(state) if isinstance(state, tuple) else [state]


@pytest.mark.parametrize("cell,kw", CASES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("recurrence", ["persistent", "step"])
def test_half_precision_error_rule(cell, kw, dtype, recurrence, tune):
    """Error against fp64 at most 2x (+1e-6) the error nn.LSTM makes in the same dtype."""
    tune(backend="cuda", recurrence=recurrence)
    torch.manual_seed(0)
    ours64, ref64 = make_pair(cell, 32, 48, dtype=torch.float64, device="cuda", num_layers=2,
                              bidirectional=True, batch_first=True, **kw)
    ours = (packedrnn.PackedLSTM if cell == "LSTM" else packedrnn.PackedGRU)(
        32, 48, num_layers=2, bidirectional=True, batch_first=True, device="cuda", dtype=dtype, **kw)
    ours.load_state_dict({k: v.to(dtype) for k, v in ours64.state_dict().items()})
    theirs = ref64.__class__(32, 48, num_layers=2, bidirectional=True, batch_first=True,
                             device="cuda", dtype=dtype, **kw)
    theirs.load_state_dict(ours.state_dict())
    exact = ref64.__class__(32, 48, num_layers=2, bidirectional=True, batch_first=True,
                            device="cuda", dtype=torch.float64, **kw)
    exact.load_state_dict({k: v.double() for k, v in ours.state_dict().items()})  # same rounded weights
    lengths = [50, 3, 27, 50, 11, 40, 1, 33]
    x = torch.randn(8, 50, 32, device="cuda", dtype=dtype)
    o_ref, s_ref = _packed_run(exact, x.double(), lengths)
    o_ours, s_ours = run_ours(ours, x, None, lengths)
    o_th, s_th = _packed_run(theirs, x, lengths)

    def err(o, s):
        return max([(o.double() - o_ref).abs().max().item()] +
                   [(a.double() - b).abs().max().item() for a, b in zip(s[:1], s_ref[:1])])
    assert err(o_ours, s_ours) <= 2 * err(o_th, s_th) + 1e-6


# The persistent kernels (forced), the per-step kernels (alone, or with cuBLAS products: the
# default for large one-direction fp32 layers).
RECURRENCES = ["persistent", "step", "gemm"]


@pytest.mark.parametrize("cell,kw", CASES)
@pytest.mark.parametrize("recurrence", RECURRENCES)
def test_bitwise_repeatable(cell, kw, recurrence, tune):
    tune(backend="cuda", recurrence=recurrence)
    ours, _ = make_pair(cell, 16, 32, dtype=torch.float32, device="cuda", num_layers=2,
                        bidirectional=True, batch_first=True, **kw)
    lengths = [20, 5, 0, 17, 20, 9]
    results = []
    for _ in range(2):
        x, hx = random_inputs(ours, lengths, 20, with_hx=True)
        out, states = run_ours(ours, x, hx, lengths)
        results.append([out] + states + sum(grads(ours, x, hx, out, states), []))
    for a, b in zip(*results):
        assert torch.equal(a, b)


@pytest.mark.parametrize("cell,kw", CASES)
@pytest.mark.parametrize("lengths_kind", ["list", "cpu", "cuda", "cpu, tokens=1"])
@pytest.mark.parametrize("recurrence", RECURRENCES)
def test_no_host_sync(cell, kw, lengths_kind, recurrence, tune):
    tune(backend="cuda", recurrence=recurrence)
    if "tokens" in lengths_kind:  # the op gets the lengths on the CPU and gathers the valid rows
        tune(tokens="1")
        lengths_kind = "cpu"
    ours, _ = make_pair(cell, 8, 32, dtype=torch.float32, device="cuda", num_layers=2,
                        bidirectional=True, batch_first=True, dropout=0.1, **kw)
    ours.train()
    lengths = [9, 0, 4, 9, 2]
    lengths = {"list": lengths, "cpu": torch.tensor(lengths),
               "cuda": torch.tensor(lengths, device="cuda")}[lengths_kind]
    x, hx = random_inputs(ours, [9, 0, 4, 9, 2], 9, with_hx=True)
    ours(x, hx, lengths=lengths)  # warm-up: allocator, cuBLAS handles
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out, state = ours(x, hx, lengths=lengths)
        loss = out.sum() + sum(s.sum() for s in (state if isinstance(state, tuple) else (state,)))
        loss.backward()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    torch.cuda.synchronize()


@pytest.mark.parametrize("cell,kw", CASES)
@pytest.mark.parametrize("recurrence", RECURRENCES)
def test_cuda_graph_capture_replays_new_lengths(cell, kw, recurrence, tune):
    """Forward and backward captured in one CUDA graph (torch.cuda.graph, as torch.compile's
    mode="reduce-overhead" does), lengths on the device: a replay with new inputs and new lengths
    (ties, zeros, T) gives what an eager call gives on them. Nothing in a call may sync, allocate
    outside the graph's pool, or size a launch from the lengths' values."""
    tune(backend="cuda", recurrence=recurrence)
    ours, _ = make_pair(cell, 8, 32, dtype=torch.float32, device="cuda", num_layers=2,
                        bidirectional=True, batch_first=True, **kw)
    B, T = 5, 9
    x = torch.randn(B, T, 8, device="cuda", requires_grad=True)
    lengths = torch.tensor([9, 0, 4, 9, 2], device="cuda")
    w = torch.randn(B, T, 2 * (kw.get("proj_size") or 32), device="cuda")  # weights of the loss

    def step():
        out, _ = ours(x, lengths=lengths)
        (out * w).sum().backward()
        return out
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up on a side stream, as torch.cuda.graph asks
        for _ in range(2):
            step()
    torch.cuda.current_stream().wait_stream(side)
    x.grad = None
    ours.zero_grad(set_to_none=True)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = step()
    new_x, new_lengths = torch.randn_like(x), torch.tensor([3, 9, 9, 0, 6], device="cuda")
    with torch.no_grad():
        x.copy_(new_x)
        lengths.copy_(new_lengths)
    graph.replay()
    got = [out.clone(), x.grad.clone()] + [p.grad.clone() for p in ours.parameters()]
    x.grad = None
    ours.zero_grad(set_to_none=True)
    want = [step(), x.grad] + [p.grad for p in ours.parameters()]
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_autocast_behaves_like_nn(cell, dtype, tune):
    tune(backend="cuda")
    ours, theirs = make_pair(cell, 8, 16, dtype=torch.float32, device="cuda", batch_first=True)
    x = torch.randn(4, 7, 8, device="cuda")
    h0 = torch.randn(1, 4, 16, device="cuda")
    hx = (h0, torch.randn_like(h0)) if cell == "LSTM" else h0
    with torch.autocast("cuda", dtype=dtype):
        out, _ = ours(x, hx, lengths=[7, 7, 7, 7])
        ref, _ = theirs(x, hx)
    # We run in the autocast dtype, as the autocast docs promise. nn.LSTM on cuDNN casts to fp16
    # whatever the autocast dtype (torch 2.11: cuDNN's RNN autocast wrapper hard-codes half), so
    # only the values are compared with it.
    assert out.dtype == dtype
    assert ref.dtype in (dtype, torch.float16)
    torch.testing.assert_close(out.float(), ref.float(), rtol=0, atol=2e-2)


@pytest.mark.parametrize("cell,kw", CASES)
@pytest.mark.parametrize("tokens", ["", "1"])
@pytest.mark.parametrize("recurrence", [None, "gemm"])
def test_cuda_matches_cpu_op_float64(cell, kw, tokens, recurrence, tune):
    """And with tokens=1 (the CUDA op gets the lengths on the CPU and runs its products over the
    valid rows only, as the CPU op does; by default only where that skips enough work), and with
    the per-step kernels' products by cuBLAS (recurrence gemm; fp64 never runs persistent)."""
    tune(tokens=tokens or None, recurrence=recurrence)
    assert "cpu" in OP_DEVICES
    torch.manual_seed(1)
    ours, _ = make_pair(cell, 12, 20, dtype=torch.float64, num_layers=2, bidirectional=True,
                        batch_first=True, **kw)
    lengths = [15, 1, 0, 15, 8, 12]
    x, hx = random_inputs(ours, lengths, 15, with_hx=True)
    tune(backend="cpu")
    o1, s1 = run_ours(ours, x, hx, lengths)
    g1 = sum(grads(ours, x, hx, o1, s1), [])
    ours_cuda = ours.to("cuda")
    xc = x.detach().cuda().requires_grad_(True)
    hxc = tuple(h.detach().cuda().requires_grad_(True) for h in hx) if isinstance(hx, tuple) else \
        hx.detach().cuda().requires_grad_(True)
    tune(backend="cuda")
    o2, s2 = run_ours(ours_cuda, xc, hxc, lengths)
    g2 = sum(grads(ours_cuda, xc, hxc, o2, s2), [])
    for a, b in zip([o1] + s1 + g1, [o2] + s2 + g2):
        torch.testing.assert_close(a, b.cpu(), rtol=0, atol=1e-10)


def test_backend_report():
    assert packedrnn.backend("cuda", torch.bfloat16) == "cuda"
    assert packedrnn.backend("cuda") == "cuda"


# Sizes that put several units in a block (Hb = 2..16), several chunks of rows per step, rows of
# every length 1..T, and reductions whose rows are not 16-byte multiples (GRU H=250: G*4 = 3000;
# proj_size 250: P*4 = 1000). With a projection, blocks past unit P own no projection output.
SIZES = [  # cell, I, H, B, T, bidirectional, module keywords
    ("LSTM", 64, 512, 8, 30, False, {}),
    ("LSTM", 32, 500, 150, 12, True, {}),
    ("GRU", 40, 300, 40, 15, False, {}),
    ("GRU", 24, 250, 70, 9, True, {}),
    ("LSTM", 16, 130, 33, 20, False, {}),
    ("LSTM", 32, 300, 40, 15, False, {"proj_size": 100}),
    ("LSTM", 24, 500, 70, 9, True, {"proj_size": 250}),
    ("LSTM", 16, 130, 33, 20, False, {"proj_size": 20}),
]
HALF_SIZES = SIZES[:4] + SIZES[6:7] + [("LSTM", 32, 1024, 40, 6, True, {})]  # 16 units per block


@pytest.mark.parametrize("cell,I,H,B,T,bi,kw", SIZES, ids=lambda v: str(v))
@pytest.mark.parametrize("recurrence,tokens", [
    ("persistent:tagged:staged", None), ("persistent:barrier:staged", None), ("persistent:tagged:reduce", None),
    ("persistent:tagged:reduce", "1"), ("persistent:barrier:staged", "1"), ("gemm", None), ("gemm", "1")])
def test_persistent_sizes(cell, I, H, B, T, bi, kw, recurrence, tokens, tune):
    """The persistent kernels (forced: a refusal is an error) against nn.LSTM/GRU + packing, in
    fp32 relative to the largest value, outputs, states and all gradients; both ways the forward
    kernel can pass h between blocks (a projection always takes the barrier), both forms of the
    backward, and lengths passed to the op on the CPU (tokens=1), so that its products skip the
    padding; instead of the persistent kernels, the per-step kernels with cuBLAS products: over
    every row, over the active rows only (lengths on the host: rows placed longest first)."""
    tune(backend="cuda", recurrence=recurrence, tokens=tokens)
    torch.manual_seed(3)
    ours, theirs = make_pair(cell, I, H, dtype=torch.float32, device="cuda", bidirectional=bi,
                             batch_first=True, **kw)
    g = torch.Generator().manual_seed(B)
    lengths = torch.randint(1, T + 1, (B,), generator=g).tolist()  # torch's packing refuses 0
    lengths[0], lengths[-1] = T, 1
    x, hx = random_inputs(ours, lengths, T, with_hx=True)
    o1, s1 = run_ours(ours, x, hx, lengths)
    o2, s2 = run_torch(theirs, x, hx, lengths)
    r1 = [o1] + s1 + sum(grads(ours, x, hx, o1, s1), [])
    r2 = [o2] + s2 + sum(grads(theirs, x, hx, o2, s2), [])
    for i, (a, b) in enumerate(zip(r1, r2)):
        rel = (a - b).abs().max().item() / max(b.abs().max().item(), 1e-30)
        assert rel <= (1e-5 if i < 1 + len(s1) else 1e-4), f"result {i}: relative error {rel:.3g}"


def persistent_against_per_step(cell, I, H, B, T, bi, kw, dtype, tol, tune, recurrence="persistent", tokens=None):
    """The persistent kernels, forced (or `recurrence`; tokens as given), against the per-step
    kernels on the same inputs, relative to the largest value of each result (the two round at
    different places, so they agree to the dtype's precision, not bitwise)."""
    tune(backend="cuda", tokens=tokens)
    torch.manual_seed(3)
    ours, _ = make_pair(cell, I, H, dtype=dtype, device="cuda", bidirectional=bi, batch_first=True, **kw)
    g = torch.Generator().manual_seed(B)
    lengths = torch.randint(0, T + 1, (B,), generator=g).tolist()
    lengths[0] = T
    x, hx = random_inputs(ours, lengths, T, with_hx=True)
    results = []
    for r in (recurrence, "step"):
        tune(recurrence=r)
        out, states = run_ours(ours, x, hx, lengths)
        results.append([out] + states + sum(grads(ours, x, hx, out, states), []))
    torch.cuda.synchronize()
    for i, (a, b) in enumerate(zip(*results)):
        a, b = a.float(), b.float()
        rel = (a - b).abs().max().item() / max(b.abs().max().item(), 1e-30)
        assert rel <= tol, f"result {i}: relative error {rel:.3g}"


@pytest.mark.parametrize("cell,I,H,B,T,bi,kw", HALF_SIZES, ids=lambda v: str(v))
@pytest.mark.parametrize("dtype,tol", [(torch.bfloat16, 2e-2), (torch.float16, 4e-3)], ids=["bf16", "fp16"])
def test_persistent_sizes_half(cell, I, H, B, T, bi, kw, dtype, tol, tune):
    """bf16/fp16 (tensor-core products) at the same sizes, against the per-step kernels; staging by
    bulk copies on sm_90 and later, by cp.async before (the emulated tests run both)."""
    persistent_against_per_step(cell, I, H, B, T, bi, kw, dtype, tol, tune)


@pytest.mark.parametrize("cell,I,H,B,T,bi,kw", HALF_SIZES, ids=lambda v: str(v))
@pytest.mark.parametrize("dtype,tol", [(torch.bfloat16, 2e-2), (torch.float16, 4e-3)], ids=["bf16", "fp16"])
@pytest.mark.parametrize("tokens", [None, "1"])
def test_gemm_products_half(cell, I, H, B, T, bi, kw, dtype, tol, tokens, tune):
    """The per-step kernels with cuBLAS products (recurrence gemm: tensor cores into fp32) against
    their own tile products, bf16/fp16; over every row, or (lengths on the host, tokens=1) over the
    active rows only."""
    persistent_against_per_step(cell, I, H, B, T, bi, kw, dtype, tol, tune, recurrence="gemm", tokens=tokens)
