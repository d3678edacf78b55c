"""The CUDA kernels' own source, compiled with g++ against emulator/ (every CUDA thread a fiber
on the CPU; warp and block barriers, mma and cp.async emulated), checked against the CPU op in
float64 on the same inputs: outputs, states and every gradient. It runs without a GPU, so it
guards the kernels' index logic in CI: the persistent kernels' (sorting, chunks, slices, the tagged
exchange, fragment layouts, the projection's second product) and the per-step kernels' (tiles, the
reverse direction's time index, h read back from out, the products' row places). Timing, the
memory model and register pressure still need a GPU (test_cuda.py, scripts/gpu_check.sh)."""
import ctypes

import pytest
import torch

from emulator import build_kernels, needs_emulator, rel_error
from packedrnn.plan import encode_recurrence

DTYPE_CODE = {torch.float32: 0, torch.float64: 1, torch.float16: 2, torch.bfloat16: 3}  # DType of rnn_cuda.h
LSTM, GRU = 0, 1
pytestmark = needs_emulator


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    emu = build_kernels(tmp_path_factory.mktemp("cuda_emu"))
    for fn in (emu.emu_forward, emu.emu_backward):
        fn.argtypes = [ctypes.POINTER(ctypes.c_int64), ctypes.POINTER(ctypes.c_void_p), ctypes.c_int]
        fn.restype = ctypes.c_int
    for fn in (emu.emu_step_forward, emu.emu_step_backward):
        fn.argtypes = [ctypes.POINTER(ctypes.c_int64), ctypes.POINTER(ctypes.c_void_p), ctypes.c_int,
                       ctypes.POINTER(ctypes.c_void_p)]
        fn.restype = ctypes.c_int
    emu.emu_backward_partials.argtypes = [ctypes.POINTER(ctypes.c_int64), ctypes.c_int]
    emu.emu_backward_partials.restype = ctypes.c_int64
    return emu


def _ptrs(tensors):
    return (ctypes.c_void_p * len(tensors))(*[None if t is None else t.data_ptr() for t in tensors])


def _call(fn, sizes, tensors, dtype, *more):
    return fn((ctypes.c_int64 * len(sizes))(*sizes), _ptrs(tensors), DTYPE_CODE[dtype], *more)


def run_case(emu, cell, I, H, P, B, T, D, dtype, lengths, tol, seed=0, nan_rows=(), expect_reduce=None,
             step=None, tokens=False, forms=()):
    """Forward and backward of one layer through the emulated kernels, inputs prepared as
    rnn_cuda_launch.cpp prepares them, against torch.ops.packedrnn on the CPU in float64.
    nan_rows: a NaN in these rows' first input, which must spoil exactly what it spoils there.
    expect_reduce: whether the backward's reduce form takes the call (None: either).
    forms: the persistent kernels' forms forced (tagged or barrier, staged or reduce; rules.h).
    step: None, the persistent kernels; else the per-step kernels with "own" products, or the
    caller's (StepProducts: emulator/driver.cpp forms them) over rows in "dense" places
    (place = row) or in "slots" (longest first, as with lengths on the host).
    tokens: gx, saved and the backward's dgx, dgh and dH in the token layout (valid positions
    only, as when the lengths are on the host); saved and the gradients NaN before the call: every
    row must be written."""
    g = torch.Generator().manual_seed(seed)
    lstm, proj = cell == LSTM, P != H
    G = (4 if lstm else 3) * H

    def rand(*shape, scale=1.0):  # values the dtype holds exactly, so both sides start equal
        return (torch.randn(*shape, generator=g) * scale).to(dtype).double()
    w_ih, w_hh = rand(D, G, I, scale=I ** -0.5), rand(D, G, P, scale=P ** -0.5)
    b_ih, b_hh = rand(D, G, scale=0.1), rand(D, G, scale=0.1)
    w_hr = rand(D, P, H, scale=H ** -0.5) if proj else None
    x, h0, c0 = rand(T, B, I), rand(D, B, P), rand(D, B, H) if lstm else None
    lens = torch.tensor(lengths, dtype=torch.int64)
    valid = torch.arange(T)[:, None] < lens[None, :]  # [T, B]
    x[~valid] = 0  # as packedrnn.functional leaves the padding
    x[0, list(nan_rows), 0] = float("nan")
    ops = torch.ops.packedrnn
    index = ops.token_index(lens, T)  # the CPU op's token index
    out_r, hn_r, cn_r, saved_r = ops.rnn_layer(cell, x, lens, index, None, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr,
                                               True, 0)

    S = lambda t: None if t is None else t.to(dtype).contiguous()  # noqa: E731
    gx = torch.stack([x.view(T * B, I) @ w_ih[d].T + b_ih[d] + (b_hh[d] if lstm else 0) for d in range(D)])
    gx = S(gx)
    gx[:, ~valid.reshape(-1)] = float("nan")  # padded rows are never read
    # The token layout (ForwardParams/BackwardParams::token): the valid positions' rows only.
    positions = valid.reshape(-1).nonzero().squeeze(1)  # t*B + b of the valid tokens
    N = positions.numel() if tokens else T * B
    token = None
    if tokens:
        token = torch.full((T * B,), -1, dtype=torch.int64)
        token[positions] = torch.arange(N)
        gx = gx[:, positions].contiguous()
    K = saved_r.shape[-1]
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    out = torch.zeros(T, B, D * P, dtype=dtype)
    h_n = torch.empty(D, B, P, dtype=dtype)
    c = c0.to(acc).clone() if lstm else None
    m = torch.empty(D, B, H, dtype=dtype) if proj else None
    saved = torch.full((D, N, K), float("nan")) if tokens else torch.zeros(D, T * B, K)
    saved = saved.to(dtype)
    xch = torch.zeros(2, D, B, P, dtype=torch.int64)
    w_hh_s, w_hr_s = S(w_hh), S(w_hr)
    sizes = [cell, T, B, D, H, P, K, int(proj), N, encode_recurrence(":".join(["persistent", *forms]))]
    forward = [lens, gx, S(h0), w_hh_s, None if lstm else S(b_hh), w_hr_s, c, m, out, h_n, saved, xch, token]
    # The step products' buffers, as rnn_cuda_launch.cpp's GemmProducts: [in, out, slot].
    slot = order = None
    if step == "slots":
        order = torch.sort(lens, stable=True, descending=True).indices  # the row at each place
        slot = torch.argsort(order)
    if step is None:
        rc = _call(emu.emu_forward, sizes, forward, dtype)
    else:
        products = None
        if step != "own":
            hbuf = S(h0 if order is None else h0[:, order])
            products = [hbuf, torch.empty(D, B, G, dtype=acc), slot]
        rc = _call(emu.emu_step_forward, sizes, forward, dtype, products and _ptrs(products))
    assert rc == 0, f"forward: CUDA error {rc}"
    # (`saved` itself is not compared: the CPU op orders its rows by rank. The weight gradients
    # below read the kernel's own `saved`.)
    results = [("out", out, out_r), ("h_n", h_n, hn_r)]
    if lstm:
        results.append(("c_n", c, cn_r))

    grad_out = rand(T, B, D * P)
    grad_out[~valid] = 0
    grad_hn, grad_cn = rand(D, B, P), rand(D, B, H) if lstm else torch.empty(0, dtype=torch.double)
    ref = ops.rnn_layer_backward(cell, x, lens, index, None, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, saved_r, grad_out,
                                 grad_hn, grad_cn, 0)
    go = S(grad_out)
    go[~valid] = float("nan")  # padded gradients are never read
    dh = grad_hn.to(acc).clone()
    dc = grad_cn.to(acc).clone() if lstm else None
    def grads(width):  # by token every row must be written: NaN until it is; by position, zeroed
        return torch.full((D, N, width), float("nan") if tokens else 0.0, dtype=dtype)
    dgx = grads(G)
    dgh = dgx if lstm else grads(G)
    dH = grads(P) if proj else None
    direct = None if lstm else torch.empty(D, B, H)
    backward = [lens, w_hh_s, w_hr_s, saved, go, dh, dc, None, dgx, dgh, dH]
    if step is None:
        n_part = emu.emu_backward_partials((ctypes.c_int64 * len(sizes))(*sizes), DTYPE_CODE[dtype])
        assert expect_reduce is None or (n_part > 0) == expect_reduce, \
            f"the reduce form {'did not take' if expect_reduce else 'took'} the call"
        part = torch.full((n_part,), float("nan")) if n_part else None
        rc = _call(emu.emu_backward, sizes, backward + [direct, part, token], dtype)
    else:
        backward[7] = torch.empty(D, B, H, dtype=dtype) if proj else None  # dm
        products = None
        if step != "own":
            products = [torch.zeros(D, B, G, dtype=dtype), torch.empty(D, B, P, dtype=acc), slot]
        rc = _call(emu.emu_step_backward, sizes, backward + [None, None, token], dtype,
                   products and _ptrs(products))
    assert rc == 0, f"backward: CUDA error {rc}"
    if tokens:  # back to every position, zero at padded ones, for the products below
        saved, dgx, dgh, dH = (None if t is None else t.new_zeros(D, T * B, t.shape[2]).index_copy_(1, positions, t)
                               for t in (saved, dgx, dgh, dH))
    # The products around the recurrence, as layer_gemms.h forms them.
    rows = saved.double().view(D, T * B, K)
    h_prev = 6 * H if lstm and proj else (5 * H if lstm else 4 * H)
    dgx64, dgh64, x2 = dgx.double(), dgh.double(), x.view(T * B, I)
    mine = {
        "dx": sum(dgx64[d] @ w_ih[d] for d in range(D)).view(T, B, I), "dh0": dh, "dc0": dc,
        "dw_ih": torch.stack([dgx64[d].T @ x2 for d in range(D)]),
        "dw_hh": torch.stack([dgh64[d].T @ rows[d, :, h_prev:h_prev + P] for d in range(D)]),
        "db_ih": dgx64.sum(1), "db_hh": dgh64.sum(1),
        "dw_hr": torch.stack([dH[d].double().T @ rows[d, :, 5 * H:6 * H] for d in range(D)]) if proj else None,
    }
    for name, theirs in zip(["dx", "dh0", "dc0", "dw_ih", "dw_hh", "db_ih", "db_hh", "dw_hr"], ref):
        if mine[name] is not None:
            results.append((name, mine[name], theirs))
    errors = {name: rel_error(a, b) for name, a, b in results}
    bad = {k: f"{v:.2g}" for k, v in errors.items() if not v <= tol}  # NaN fails too
    assert not bad, f"relative errors above {tol}: {bad}"
    return errors


def case_lengths(B, T):
    """Random lengths in [0, T] for a case, unsorted, with T (row 1) and 0 (the last row) among them."""
    g = torch.Generator().manual_seed(B + T)
    lengths = torch.randint(0, T + 1, (B,), generator=g).tolist()
    lengths[1] = T
    lengths[-1] = 0
    return lengths


# Sizes for an emulated device of `sms` SMs: units per block Hb = 1..8 (a partial last block),
# several chunks of rows per step (B past 512 / Hb, or little shared memory), rows that are not
# 16-byte multiples (staged through registers), a projection whose blocks past unit P own no
# output and whose rows are wider than the recurrent ones, both forward exchanges.
CASES = [  # cell, I, H, P, B, T, D, dtype, SMs, shared memory per block, exchange forced
    (LSTM, 5, 20, 20, 70, 6, 2, torch.float32, 8, 232448, "tagged"),
    (LSTM, 5, 20, 20, 70, 6, 2, torch.float32, 8, 232448, "barrier"),
    (GRU, 5, 12, 12, 9, 7, 1, torch.float32, 8, 232448, "tagged"),
    (GRU, 5, 12, 12, 9, 7, 1, torch.float32, 8, 232448, "barrier"),
    (LSTM, 3, 5, 5, 5, 4, 1, torch.float32, 8, 232448, ""),
    (GRU, 4, 13, 13, 20, 5, 2, torch.float32, 8, 232448, ""),
    (LSTM, 4, 24, 10, 20, 5, 2, torch.float32, 8, 232448, ""),
    (LSTM, 3, 20, 6, 40, 6, 1, torch.float32, 8, 24000, ""),
    (LSTM, 3, 40, 33, 12, 4, 1, torch.float32, 8, 232448, ""),
    (LSTM, 8, 136, 24, 10, 4, 1, torch.float32, 24, 232448, ""),
    (LSTM, 5, 20, 20, 33, 5, 2, torch.bfloat16, 8, 232448, ""),
    (GRU, 5, 12, 12, 17, 6, 2, torch.float16, 8, 232448, "barrier"),
    (LSTM, 4, 24, 16, 20, 5, 2, torch.bfloat16, 8, 232448, ""),
    (LSTM, 4, 13, 13, 9, 5, 1, torch.float16, 8, 232448, ""),
    (LSTM, 6, 40, 40, 40, 5, 2, torch.bfloat16, 6, 232448, ""),  # 16 units per block
    (GRU, 6, 40, 40, 20, 5, 2, torch.float16, 6, 232448, "barrier"),
    (LSTM, 6, 40, 24, 20, 4, 2, torch.bfloat16, 6, 232448, ""),
]
TOL = {torch.float64: 1e-10, torch.float32: 1e-4, torch.bfloat16: 3e-2, torch.float16: 5e-3}


@pytest.mark.parametrize("bwd", ["staged", "reduce"])
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "{}-H{}-P{}-B{}-D{}-{}-{}".format(
    "LSTM" if c[0] == LSTM else "GRU", c[2], c[3], c[4], c[6], str(c[7])[6:], c[10] or "auto"))
def test_persistent_kernels_emulated(emu, case, seed, bwd):
    """Seed 0 runs the threads in a fixed order, seeds 1-2 in random orders (races show there).
    Lengths include zeros, ties and T, unsorted; gate inputs and output gradients are NaN at
    padded positions. Both forms of the backward (forced; a projection or 16 units per block
    always take the staged one)."""
    cell, I, H, P, B, T, D, dtype, sms, optin, xch = case
    emu.emu_configure(sms, optin, seed)
    lengths = case_lengths(B, T)
    reduce = bwd == "reduce" and P == H and D * -(-H // 8) <= sms  # no projection, <= 8 units per block
    run_case(emu, cell, I, H, P, B, T, D, dtype, lengths, TOL[dtype], seed=seed, expect_reduce=reduce,
             forms=[f for f in (xch, bwd) if f])


@pytest.mark.parametrize("bwd", ["staged", "reduce"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "{}-H{}-P{}-B{}-D{}-{}-{}".format(
    "LSTM" if c[0] == LSTM else "GRU", c[2], c[3], c[4], c[6], str(c[7])[6:], c[10] or "auto"))
def test_persistent_backward_token_rows_emulated(emu, case, bwd):
    """The persistent backward with its gate gradients by token (BackwardParams::token, the layout
    when the lengths are on the host), NaN before the call so that every valid row must be
    written; a random thread order."""
    cell, I, H, P, B, T, D, dtype, sms, optin, xch = case
    emu.emu_configure(sms, optin, 1)
    run_case(emu, cell, I, H, P, B, T, D, dtype, case_lengths(B, T), TOL[dtype], seed=1, tokens=True,
             forms=[f for f in (xch, bwd) if f])


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("case", [c for c in CASES if c[10] != "tagged"], ids=lambda c: "{}-H{}-P{}-B{}-D{}-{}".format(
    "LSTM" if c[0] == LSTM else "GRU", c[2], c[3], c[4], c[6], str(c[7])[6:]))
def test_cp_async_staging_emulated(emu, case, seed):
    """On an emulated sm_80 device, cp.async's staging (by every thread in 16-byte pieces, one
    commit group per tile of rows; sm_90 and later stage by bulk copies): the same results, forward
    (barrier exchange) and the staged backward, projections included."""
    cell, I, H, P, B, T, D, dtype, sms, optin, _ = case
    emu.emu_configure(sms, optin, seed)
    emu.emu_set_compute_capability(8)
    try:
        run_case(emu, cell, I, H, P, B, T, D, dtype, case_lengths(B, T), TOL[dtype], seed=seed,
                 expect_reduce=False, forms=["barrier", "staged"])
    finally:
        emu.emu_set_compute_capability(9)


# The per-step kernels (rnn_kernels.cu: 8 rows x 32 units a block): several tiles of units and of
# rows, a last tile part full, both directions, projections narrower and wider than a tile, every
# dtype (fp64 only runs here).
STEP_CASES = [  # cell, I, H, P, B, T, D, dtype
    (LSTM, 5, 40, 40, 12, 5, 2, torch.float32),
    (GRU, 4, 33, 33, 10, 6, 2, torch.float64),
    (LSTM, 3, 40, 24, 9, 5, 2, torch.float32),
    (LSTM, 3, 72, 40, 9, 4, 1, torch.float64),
    (LSTM, 4, 24, 24, 17, 5, 1, torch.bfloat16),
    (GRU, 4, 24, 24, 17, 5, 2, torch.float16),
]


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("products,tokens", [("own", False), ("own", True), ("dense", False), ("slots", True)],
                         ids=["own", "own-tokens", "dense", "slots-tokens"])
@pytest.mark.parametrize("case", STEP_CASES, ids=lambda c: "{}-H{}-P{}-B{}-D{}-{}".format(
    "LSTM" if c[0] == LSTM else "GRU", c[2], c[3], c[4], c[6], str(c[7])[6:]))
def test_per_step_kernels_emulated(emu, case, products, tokens, seed):
    """The per-step kernels, with their own products and with the caller's (the gemm recurrence:
    rows in place order or longest first, the products stopping at the active rows and NaN past
    them), the gate gradients by position or by token (as with the lengths on the host: slots come
    with tokens), in a fixed and a random thread order; lengths with zeros, ties and T, NaN padding."""
    cell, I, H, P, B, T, D, dtype = case
    emu.emu_configure(8, 232448, seed)
    run_case(emu, cell, I, H, P, B, T, D, dtype, case_lengths(B, T), TOL[dtype], seed=seed, step=products,
             tokens=tokens)


def test_per_step_nan_stays_in_its_row(emu):
    """A NaN inside two rows' sequences spoils those rows' results and the weight gradients only,
    also through the step products over rows in slots (a NaN row's product must not reach another
    row's place)."""
    emu.emu_configure(8, 232448, 1)
    run_case(emu, LSTM, 3, 40, 24, 12, 5, 2, torch.float32, [5, 5, 5, 5, 5, 5, 5, 5, 3, 2, 0, 1],
             TOL[torch.float32], nan_rows=[3, 7], step="slots", tokens=True)


@pytest.mark.parametrize("H,P,sms", [(20, 20, 8), (120, 100, 16), (136, 24, 24)])
def test_nan_stays_in_its_row(emu, H, P, sms):
    """A NaN inside two rows' sequences (ranks 3 and 7): their results and the weight gradients are
    NaN, every other row's are exact. With a projection, the rows staged for one product leave
    values where the other's rows (wider or narrower) have their zero padding; it is zeroed again
    (at these sizes the NaN rows' values land there, forward and backward)."""
    emu.emu_configure(sms, 232448, 1)
    run_case(emu, LSTM, 3, H, P, 12, 5, 1, torch.float32, [5, 5, 5, 5, 5, 5, 5, 5, 3, 2, 0, 1],
             TOL[torch.float32], nan_rows=[3, 7])


def test_all_rows_full_length(emu):
    emu.emu_configure(8, 232448, 1)
    run_case(emu, LSTM, 4, 20, 20, 7, 5, 2, torch.float32, [5] * 7, TOL[torch.float32])


@pytest.mark.parametrize("cell,H,P,T,dtype,reduce", [
    (LSTM, 512, 512, 100, torch.float32, True),
    (GRU, 1024, 1024, 200, torch.float32, True),
    (LSTM, 512, 512, 100, torch.bfloat16, False),   # tensor cores: the staged form
    (LSTM, 1024, 256, 100, torch.float32, False),   # a projection: the staged form
    (LSTM, 512, 512, 10, torch.float32, False),     # partials larger than the gate gradients
])
def test_which_backward_form_by_default(emu, cell, H, P, T, dtype, reduce):
    """With no form forced, on a 132-SM device: fp32 takes the reduce form (it asks for partials),
    except with a projection or where the partials would outgrow the gate gradients; bf16/fp16
    take the staged form."""
    emu.emu_configure(132, 232448, 0)
    sizes = [cell, T, 64, 1, H, P, 1, int(P != H), 0, 0]
    assert (emu.emu_backward_partials((ctypes.c_int64 * len(sizes))(*sizes), DTYPE_CODE[dtype]) > 0) == reduce


@pytest.mark.parametrize("sms,dtype", [(2, torch.bfloat16), (6, torch.float32)])
def test_a_refused_launch_is_reported(emu, sms, dtype):
    """More units per block than the kernels take (H = 40, both directions, on 2 SMs: 64 units per
    block; on 6: 16, which an fp32 forward does not take): cudaErrorNotSupported, and nothing ran
    (the caller then runs the per-step kernels). The other buffers are too small to be touched."""
    emu.emu_configure(sms, 232448, 0)
    lens = torch.tensor([3, 2], dtype=torch.int64)
    out = torch.zeros(3, 2, 80, dtype=dtype)
    rest = [torch.zeros(1)] * 7
    rc = _call(emu.emu_forward, [LSTM, 3, 2, 2, 40, 40, 240, 0, 0, 0],
               [lens] + rest + [out] + [torch.zeros(1)] * 3 + [None], dtype)
    assert rc == 801 and not out.any()


# Where the persistent kernels take a layer on a 132-SM H100/H200 (227 KB of shared memory per
# block), and where the per-step kernels do (README: the boundary): every layer of the GPU suite,
# 16 units per block for bf16/fp16 only, and shared memory as the limit at H = 2048.
BOUNDARY = [  # cell, H, P, D, B, dtype, forward taken, backward taken
    (LSTM, 256, 256, 1, 64, torch.float32, True, True),
    (LSTM, 512, 512, 2, 64, torch.float32, True, True),
    (LSTM, 512, 512, 2, 64, torch.bfloat16, True, True),
    (LSTM, 512, 512, 1, 8, torch.float32, True, True),
    (LSTM, 1024, 1024, 1, 256, torch.float32, True, True),
    (LSTM, 1024, 1024, 1, 256, torch.bfloat16, True, True),
    (GRU, 512, 512, 2, 64, torch.float32, True, True),
    (LSTM, 128, 128, 1, 32, torch.float32, True, True),
    (LSTM, 1024, 1024, 2, 64, torch.bfloat16, True, True),   # 16 units per block
    (GRU, 1024, 1024, 2, 64, torch.float16, True, True),
    (LSTM, 1024, 1024, 2, 64, torch.float32, False, False),  # fp32 with 16 units: per-step
    (LSTM, 1024, 256, 1, 64, torch.float32, True, True),     # projection
    (LSTM, 1024, 256, 2, 64, torch.bfloat16, True, True),
    (LSTM, 2048, 2048, 1, 64, torch.bfloat16, False, False),  # W_hh slice too large
    (LSTM, 1100, 1100, 2, 64, torch.bfloat16, False, False),  # 32 units per block
]


@pytest.mark.parametrize("case", BOUNDARY, ids=lambda c: "{}-H{}-P{}-D{}-B{}-{}".format(
    "LSTM" if c[0] == LSTM else "GRU", c[1], c[2], c[3], c[4], str(c[5])[6:]))
def test_where_the_persistent_kernels_run(emu, case):
    """The launch decision only (plan, shared memory, co-residency), nothing runs: the buffers are
    never touched."""
    cell, H, P, D, B, dtype, fwd, bwd = case
    emu.emu_configure(132, 232448, 0)
    emu.emu_dry_run(1)
    try:
        lens, dummy = torch.zeros(B, dtype=torch.int64), torch.zeros(1)
        sizes = [cell, 4, B, D, H, P, 1, int(P != H), 0, 0]
        got = [_call(fn, sizes, [lens] + [dummy] * 12 + [None], dtype) for fn in (emu.emu_forward, emu.emu_backward)]
    finally:
        emu.emu_dry_run(0)
    assert got == [0 if fwd else 801, 0 if bwd else 801]
