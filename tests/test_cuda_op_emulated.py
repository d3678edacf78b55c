"""The CUDA op whole, without a GPU: csrc/cuda/rnn_cuda_launch.cpp (the torch glue: buffers, the
lengths' two paths, the token layout, the row places and step products of the gemm mode, the
products around the recurrence) compiled for CPU tensors as torch.ops.packedrnn_emu, its kernels
on the CPU emulator (tests/emulator.py), against the CPU op in float64 on the same inputs.
test_cuda_emulated.py checks the kernels alone, with their inputs prepared in Python; this checks
the preparation the GPU runs. Uninitialized memory is NaN (torch's deterministic mode fills every
at::empty), so a buffer that must be zeroed or written and is not shows up."""
import ctypes
import random

import pytest
import torch

from emulator import build_op, needs_emulator, rel_error
from packedrnn.cells import BY_CODE, CELLS
from packedrnn.plan import encode_recurrence

LSTM, GRU, RNN_TANH, RNN_RELU = (CELLS[n].code for n in ("LSTM", "GRU", "RNN_TANH", "RNN_RELU"))
TOL = {torch.float64: 1e-10, torch.float32: 1e-4, torch.bfloat16: 3e-2, torch.float16: 5e-3}
pytestmark = needs_emulator


@pytest.fixture(scope="module")
def op(tmp_path_factory):
    return build_op(tmp_path_factory.mktemp("cuda_op_emu"))


@pytest.fixture(autouse=True)
def default_device(op):
    """Each test starts on the default emulated device: sm_90."""
    op[1].emu_set_compute_capability(9)


@pytest.fixture
def nan_empty():
    """at::empty returns NaN-filled memory while the test runs."""
    was, warn = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    yield
    torch.use_deterministic_algorithms(was, warn_only=warn)


def layer_inputs(cell, I, H, P, B, T, D, dtype, lengths, seed=0, where="host"):
    """rnn_layer's arguments but `train` (the padding of x zero, as packedrnn.functional passes it),
    and rnn_layer_backward's output gradients (NaN in the padding, which is never read), in values
    the dtype holds exactly. where="host": with the token index and the lengths on the host (as
    packedrnn.functional passes a CUDA layer lengths given on the CPU); "device": neither (lengths
    on the GPU, which the host must not read)."""
    g = torch.Generator().manual_seed(seed)
    spec = BY_CODE[cell]
    lstm, G = spec.cell_state, spec.gates * H

    def rand(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g) * scale).to(dtype)
    w_ih, w_hh = rand(D, G, I, scale=I ** -0.5), rand(D, G, P, scale=P ** -0.5)
    b_ih, b_hh = rand(D, G, scale=0.1), rand(D, G, scale=0.1)
    w_hr = rand(D, P, H, scale=H ** -0.5) if P != H else None
    x, h0, c0 = rand(T, B, I), rand(D, B, P), rand(D, B, H) if lstm else None
    lens = torch.tensor(lengths, dtype=torch.int64)
    valid = torch.arange(T)[:, None] < lens[None, :]
    x[~valid] = 0
    grad_out, grad_hn = rand(T, B, D * P), rand(D, B, P)
    grad_out[~valid] = float("nan")
    grad_cn = rand(D, B, H) if lstm else torch.empty(0, dtype=dtype)
    tokens, host = (torch.ops.packedrnn.token_index(lens, T), lens) if where == "host" else (None, None)
    return [cell, x, lens, tokens, host, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr], [grad_out, grad_hn, grad_cn]


def cpu_op_args(args):
    """The same layer for the CPU op (which takes the token index always)."""
    return args[:3] + [torch.ops.packedrnn.token_index(args[2], args[1].shape[0]), None] + args[5:]


def forward_backward(ns, args, grads, recurrence=None):
    """out, h_n, c_n and the backward's 8 gradients of one layer through the ops of namespace ns,
    on the recurrence given (a packedrnn.tuning value; None: the op's choice)."""
    path = encode_recurrence(recurrence)
    out, h_n, c_n, saved = ns.rnn_layer(*args, True, path)
    return [out, h_n, c_n] + list(ns.rnn_layer_backward(*args, saved, *grads, path))


def run_layer(ops, cell, I, H, P, B, T, D, dtype, lengths, seed=0, context="", recurrence=None, where="host"):
    """Forward (train) and backward of one layer through ops.packedrnn_emu (on `recurrence`, the
    index as `where` says: layer_inputs) and through the CPU op in float64 on the same inputs;
    asserts every result within TOL (NaN fails too), naming `context`."""
    args, grads = layer_inputs(cell, I, H, P, B, T, D, dtype, lengths, seed, where)
    mine = forward_backward(ops, args, grads, recurrence)
    f64 = lambda t: t.double() if isinstance(t, torch.Tensor) and t.is_floating_point() else t  # noqa: E731
    ref = forward_backward(torch.ops.packedrnn, [f64(t) for t in cpu_op_args(args)], [f64(t) for t in grads])
    names = ["out", "h_n", "c_n", "dx", "dh0", "dc0", "dw_ih", "dw_hh", "db_ih", "db_hh", "dw_hr"]
    for name, a, b in zip(names, mine, ref):
        assert a.dtype == dtype or a.numel() == 0, f"{name}: {a.dtype}"
    errors = {name: rel_error(a, b) for name, a, b in zip(names, mine, ref) if b.numel()}
    bad = {k: f"{v:.2g}" for k, v in errors.items() if not v <= TOL[dtype]}
    assert not bad, f"{context}: relative errors above {TOL[dtype]}: {bad}"


def case_lengths(B, T):
    """B lengths in [0, T] with T, 0 and a tie among them, in an order that sorting longest first
    does not undo by applying itself twice (a rotation of a descending list): a mix-up of a row's
    place and the row at a place shows."""
    g = torch.Generator().manual_seed(B * T)
    desc = sorted(([T, 0, 1, 1] + torch.randint(0, T + 1, (max(B - 4, 0),), generator=g).tolist())[:B], reverse=True)
    return desc[B // 3 + 1:] + desc[:B // 3 + 1]


# cell, I, H, P, B, T, D, dtype: both directions, a projection, a partial last block of units,
# half types (tensor-core products in the persistent kernels), fp64 (per-step kernels only).
CASES = [
    (LSTM, 5, 20, 20, 9, 6, 2, torch.float32),
    (GRU, 4, 12, 12, 7, 5, 1, torch.float32),
    (LSTM, 4, 24, 10, 8, 5, 2, torch.float32),
    (GRU, 3, 10, 10, 6, 5, 2, torch.float64),
    (LSTM, 3, 16, 16, 5, 4, 1, torch.bfloat16),
    (GRU, 4, 12, 12, 7, 5, 2, torch.float16),
    (RNN_TANH, 5, 33, 33, 9, 6, 2, torch.float32),
    (RNN_RELU, 4, 20, 20, 7, 5, 1, torch.float64),
    (RNN_TANH, 4, 16, 16, 6, 5, 2, torch.bfloat16),
]
# Each recurrence the op can run (packedrnn.tuning's recurrence).
MODES = ["persistent", "step", "gemm"]


@pytest.mark.parametrize("where", ["host", "device"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", CASES, ids=lambda c: "{}-H{}-P{}-B{}-D{}-{}".format(
    BY_CODE[c[0]].name, c[2], c[3], c[4], c[6], str(c[7])[6:]))
def test_cuda_op_emulated(op, nan_empty, case, mode, where):
    """Every recurrence of the op (the persistent kernels; the per-step kernels with their own
    products, with ATen's), the lengths on the host (the token layout: gx, saved, dgx, dgh, dH over
    the valid rows only; the gemm mode's rows longest first) and on the device (every position);
    lengths unsorted with ties, zeros and T."""
    ops, emu = op
    cell, I, H, P, B, T, D, dtype = case
    if mode == "persistent" and dtype == torch.float64:
        pytest.skip("the persistent kernels do not take fp64 (test_persistent_refuses_fp64)")
    if mode == "gemm" and dtype not in (torch.float32, torch.float64):
        pytest.skip("half types into fp32: ATen's mm with out_dtype is CUDA-only (the gemm mode runs "
                    "them only when forced)")
    emu.emu_configure(8, 232448, 1)  # a random thread order
    if mode == "persistent" and BY_CODE[cell].gates == 1:  # one-gate cells: the per-step kernels only
        with pytest.raises(RuntimeError, match="persistent kernel refused this call"):
            run_layer(ops, cell, I, H, P, B, T, D, dtype, case_lengths(B, T), recurrence=mode, where=where)
        return
    run_layer(ops, cell, I, H, P, B, T, D, dtype, case_lengths(B, T), recurrence=mode, where=where)


def test_persistent_refuses_fp64(op):
    """The recurrence forced to persistent with fp64: the op's clear error, not a fallback."""
    ops, emu = op
    emu.emu_configure(8, 232448, 0)
    with pytest.raises(RuntimeError, match="persistent kernel refused this call"):
        run_layer(ops, GRU, 3, 10, 10, 4, 3, 1, torch.float64, [3, 1, 0, 2], recurrence="persistent")


@pytest.mark.parametrize("B,D,dtype,persistent", [
    (191, 1, torch.float32, True), (192, 1, torch.float32, False),
    (192, 2, torch.float32, True), (192, 1, torch.bfloat16, True)])
def test_which_recurrence_by_default(op, B, D, dtype, persistent):
    """With nothing forced, on a 132-SM device (rules.h, choose_recurrence): the persistent kernels,
    except for one-direction fp32 layers with B * H >= 192 * 512, which run the per-step kernels with
    cuBLAS products. The launch decision only: launches record their size and run nothing."""
    ops, emu = op
    emu.emu_configure(132, 232448, 0)
    emu.emu_dry_run(1)
    blocks, smem = ctypes.c_int(), ctypes.c_size_t()
    try:
        args, _ = layer_inputs(LSTM, 4, 512, 512, B, 1, D, dtype, [1] * B)
        ops.rnn_layer(*args, False, 0)
        emu.emu_last_launch(ctypes.byref(blocks), ctypes.byref(smem))
    finally:
        emu.emu_dry_run(0)
    assert (smem.value > 0) == persistent  # the persistent kernels' dynamic shared memory


def test_token_index_is_checked_on_the_device(op):
    """Tokens that are not exactly the valid positions of the lengths: the CUDA op's device-side
    check (no sync; on the emulator's CPU tensors it raises at once), never a bad memory access."""
    ops, emu = op
    args, _ = layer_inputs(LSTM, 3, 8, 8, 4, 5, 1, torch.float32, [5, 3, 0, 5])
    good = args[3]
    for bad in (torch.cat([good[:-1], good[:1]]), torch.cat([good[:-1], torch.tensor([2])]), good[:-1]):
        args[3] = bad
        with pytest.raises(RuntimeError, match="tokens are not exactly the valid positions"):
            ops.rnn_layer(*args, False, 0)


def test_path_is_checked(op):
    """A `path` that encodes no Tuning (rules.h) is refused by both ops, before any work."""
    ops, emu = op
    args, grads = layer_inputs(LSTM, 3, 8, 8, 2, 3, 1, torch.float32, [3, 1])
    for ns in (ops, torch.ops.packedrnn):
        for path in (-1, 64, 3 << 2):
            with pytest.raises(RuntimeError, match=f"path = {path} is not a valid encoding"):
                ns.rnn_layer(*args, True, path)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", [CASES[0], CASES[1], CASES[2], CASES[5]], ids=lambda c: "{}-P{}-D{}-{}".format(
    BY_CODE[c[0]].name, c[3], c[6], str(c[7])[6:]))
def test_bitwise_repeatable_across_thread_orders(op, case, mode):
    """Two runs under different random thread orders give the same bits: no result depends on which
    thread or block gets there first (no atomics, fixed reduction orders), as on the GPU."""
    ops, emu = op
    cell, I, H, P, B, T, D, dtype = case
    if mode == "gemm" and dtype not in (torch.float32, torch.float64):
        pytest.skip("the gemm mode's half types are CUDA-only here")
    args, grads = layer_inputs(cell, I, H, P, B, T, D, dtype, case_lengths(B, T), seed=3)
    runs = []
    for seed in (1, 2):
        emu.emu_configure(8, 232448, seed)
        runs.append(forward_backward(ops, args, grads, mode))
    for a, b in zip(*runs):
        assert torch.equal(a, b)


@pytest.mark.parametrize("mode", [None, "step", "gemm"])
def test_degenerate_batches(op, nan_empty, mode):
    """Every row T long (no padding at all), one row of length 0, no rows, no steps: each
    recurrence by default and on each path of the lengths (the emulator, like CUDA, refuses an
    empty grid)."""
    ops, emu = op
    emu.emu_configure(8, 232448, 1)
    for where in ("host", "device"):
        for T, lengths in ((5, [5] * 4), (5, [0]), (5, []), (0, [0, 0])):
            run_layer(ops, LSTM, 3, 12, 12, len(lengths), T, 1 if mode == "gemm" else 2, torch.float32, lengths,
                      context=f"{where} T={T} {lengths}", recurrence=mode, where=where)


def random_layers(n, seed):
    """n random layers and settings: sizes (partial blocks and tiles, projections), dtypes,
    recurrences, both lengths paths, the persistent kernels' switches, emulated SM counts, shared
    memory and thread orders. Half types get I >= 4 and B >= 3: their input gradients of one or two
    elements run through ATen's half GEMM and miss the relative tolerance by rounding alone. And no
    relu cell: a pre-activation near 0 changes side under half-type rounding, and its gradient with
    it (nn.RNN itself in bf16 is 0.04-0.06 off fp64 in gradients on such a layer, above TOL)."""
    rng = random.Random(seed)
    for _ in range(n):
        cell = rng.choice([LSTM, GRU, RNN_TANH, RNN_RELU])
        dtype = rng.choice([torch.float32, torch.float32, torch.float64, torch.bfloat16, torch.float16])
        half = dtype in (torch.bfloat16, torch.float16)
        cell = RNN_TANH if half and cell == RNN_RELU else cell
        H = rng.randint(1, 40)
        P = rng.randint(1, H - 1) if cell == LSTM and H > 1 and rng.random() < 0.4 else H
        B, T, I = rng.randint(3 if half else 1, 20), rng.randint(1, 7), rng.randint(4 if half else 1, 6)
        # (no gemm mode for half types: ATen's mm into fp32 is CUDA-only)
        mode = rng.choice(["", "persistent", "step"] + ([] if half else ["gemm"]))
        if dtype == torch.float64 and mode == "persistent":
            mode = "step"
        if mode in ("", "persistent"):  # the persistent kernels' forms, forced or by the rules
            forms = [rng.choice(["", "tagged", "barrier"]), rng.choice(["", "staged", "reduce"])]
            mode = ":".join(["persistent"] + [f for f in forms if f]) if any(forms) else mode
        settings = {"recurrence": mode or None, "where": rng.choice(["host", "device"]),
                    "compute_capability": rng.choice([8, 9])}
        device = (rng.choice([2, 4, 8, 16, 24]), rng.choice([232448, 100000, 48000]), rng.randint(0, 3))
        yield (cell, I, H, P, B, T, rng.choice([1, 2]), dtype), [rng.randint(0, T) for _ in range(B)], settings, device


def test_random_layers(op, nan_empty):
    """150 random layers (random_layers) against the CPU op; a forced persistent call may be
    refused (too many units per block for the emulated device), nothing else may fail."""
    ops, emu = op
    try:
        for case, lengths, settings, device in random_layers(150, seed=10):
            emu.emu_set_compute_capability(settings["compute_capability"])
            emu.emu_configure(*device)
            context = f"{case} {lengths} {settings} {device}"
            try:
                run_layer(ops, *case, lengths, context=context, recurrence=settings["recurrence"],
                          where=settings["where"])
            except RuntimeError as e:
                if "refused" in str(e) and (settings["recurrence"] or "").startswith("persistent"):
                    continue
                raise AssertionError(context) from e
    finally:
        emu.emu_set_compute_capability(9)


@pytest.mark.parametrize("where", ["host", "device"])
@pytest.mark.parametrize("cell,P", [(LSTM, 12), (LSTM, 6), (GRU, 12), (RNN_RELU, 12)])
def test_opcheck_emulated(op, cell, P, where):
    """torch.library.opcheck of the emulated op with packedrnn's fake kernels: with the token index,
    `saved` holds the valid positions only, as many rows as the index has."""
    ops, emu = op
    emu.emu_configure(8, 232448, 0)
    lengths = [5, 3, 0, 5]
    args, _ = layer_inputs(cell, 3, 12, P, 4, 5, 2, torch.float32, lengths, where=where)
    args = tuple(args) + (True, 0)
    assert ops.rnn_layer(*args)[3].shape[1] == (sum(lengths) if where == "host" else 5)
    torch.library.opcheck(ops.rnn_layer.default, args)
