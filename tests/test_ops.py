"""The compiled custom ops: opcheck, torch.compile, no-grad, thread counts, JIT (double backward and
torch.func: test_higher_order.py; bad arguments: test_fuzz_ops.py)."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

import packedrnn
from packedrnn import ops
from packedrnn.bench import DTYPES, Case
from packedrnn.cells import BY_CODE, CELLS
from helpers import OP_DEVICES, assert_same_results_and_grads, make_pair, random_inputs

pytestmark = pytest.mark.skipif(not ops.available("cpu"), reason="compiled CPU ops not built")
LSTM, GRU, RNN_RELU = (CELLS[n].code for n in ("LSTM", "GRU", "RNN_RELU"))


def op_args(cell, proj, bidirectional, lengths, T=5, I=3, H=4, bias=True, requires_grad=True,
            dtype=torch.float64, device="cpu", index=True):
    """rnn_layer's arguments; `index`: with the token index (and, for CUDA, the lengths on the host)."""
    g = torch.Generator().manual_seed(len(lengths) * 31 + T)
    D, B = 2 if bidirectional else 1, len(lengths)
    G = BY_CODE[cell].gates * H
    P = proj or H

    def r(*shape):
        return torch.randn(*shape, generator=g, dtype=dtype).to(device).requires_grad_(requires_grad)
    x = torch.randn(T, B, I, generator=g, dtype=dtype).to(device)
    for b, n in enumerate(lengths):
        x[n:, b] = 0
    x.requires_grad_(requires_grad)
    host = torch.tensor(lengths, dtype=torch.int64)
    tokens = torch.ops.packedrnn.token_index(host, T).to(device) if index else None
    host = host if index and device != "cpu" else None
    c0 = r(D, B, H) if cell == LSTM else None
    b_ih, b_hh = (r(D, G), r(D, G)) if bias else (None, None)
    w_hr = r(D, P, H) if proj else None
    return (cell, x, host.to(device) if host is not None else torch.tensor(lengths, device=device), tokens, host,
            r(D, B, P), c0, r(D, G, I), r(D, G, P), b_ih, b_hh, w_hr, requires_grad, 0)


PATTERNS = [[5, 3, 0, 5], [1, 1, 1], [2], [4, 5, 4, 1, 3]]
OP_CELLS = [(LSTM, 0), (LSTM, 2), (GRU, 0), (RNN_RELU, 0)]


@pytest.mark.parametrize("device", OP_DEVICES + (["cuda-host-lengths"] if "cuda" in OP_DEVICES else []))
@pytest.mark.parametrize("cell,proj", OP_CELLS)
@pytest.mark.parametrize("lengths", PATTERNS)
@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck(cell, proj, lengths, requires_grad, device):
    """With the token index (`saved` by token: its row count the index's), and on CUDA also
    without it (cuda: every position; cuda-host-lengths: the index and the lengths on the host)."""
    args = op_args(cell, proj, True, lengths, requires_grad=requires_grad, device=device.split("-")[0],
                   index=device != "cuda")
    torch.library.opcheck(torch.ops.packedrnn.rnn_layer.default, args)


@pytest.mark.parametrize("lengths", PATTERNS)
def test_opcheck_token_index(lengths):
    torch.library.opcheck(torch.ops.packedrnn.token_index.default, (torch.tensor(lengths), 5))


def test_the_op_checks_its_token_index():
    """Tokens that are not exactly the valid positions of the lengths (a position twice, a padded
    one, one missing, one out of range): a clear error before any work."""
    args = list(op_args(LSTM, 0, True, [5, 3, 0, 5]))
    good = args[3]
    for bad in (torch.cat([good[:-1], good[:1]]), torch.cat([good[:-1], torch.tensor([2])]), good[:-1],
                torch.cat([good[:-1], torch.tensor([99])])):
        args[3] = bad
        with pytest.raises(ValueError, match="tokens"):
            torch.ops.packedrnn.rnn_layer(*args)
    args[3] = None
    with pytest.raises(RuntimeError, match="the CPU op takes tokens"):
        torch.ops.packedrnn.rnn_layer(*args)


@pytest.mark.parametrize("bad,message", [(6, "lengths\\[1\\] = 6 exceeds T = 5"), (10**9, "exceeds T = 5"),
                                         (-1, "lengths\\[1\\] = -1 is negative")])
def test_the_op_checks_lengths_it_reads(bad, message):
    """A direct call of the CPU op (as torch.jit.trace or any caller that skips packedrnn.functional
    makes) with a length outside [0, T]: a clear error before any work, never a bad memory access."""
    args = list(op_args(LSTM, 0, True, [5, 3, 0, 5]))
    args[2] = torch.tensor([5, bad, 0, 5])
    for train in (False, True):
        with pytest.raises(ValueError, match=message):
            torch.ops.packedrnn.rnn_layer(*args[:-2], train, 0)
    with pytest.raises(ValueError, match=message):  # the same check, the same words
        torch.ops.packedrnn.token_index(torch.tensor([5, bad, 0, 5]), 5)


def test_no_grad_saves_nothing():
    """`saved` is kept where autograd records the call, whatever `train` says, and only there."""
    args = op_args(LSTM, 0, True, [5, 3, 0, 5])
    with torch.no_grad():
        assert torch.ops.packedrnn.rnn_layer(*args[:-2], False, 0)[3].numel() == 0
    assert any(isinstance(a, torch.Tensor) and a.requires_grad for a in args)
    assert torch.ops.packedrnn.rnn_layer(*args[:-2], False, 0)[3].numel() > 0
    m = packedrnn.PackedLSTM(3, 4, bidirectional=True)
    x = torch.randn(5, 2, 3)
    for ctx in (torch.no_grad(), torch.inference_mode()):
        with ctx:
            out, _ = m(x, lengths=[5, 2])
        assert out.grad_fn is None


@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_repeatable_and_thread_count_independent(cell, tune):
    tune(backend="cpu")
    results = {}
    threads = torch.get_num_threads()
    try:
        for dtype in (torch.float64, torch.float32):
            for n in sorted({1, max(2, threads)}):
                torch.set_num_threads(n)
                ours, _ = make_pair(cell, 16, 32, dtype=dtype, num_layers=2, bidirectional=True)
                torch.manual_seed(0)
                ours.load_state_dict({k: torch.randn_like(v) * 0.2 for k, v in ours.state_dict().items()})
                lengths = [30, 17, 0, 30, 5, 22, 9, 30]
                runs = []
                for _ in range(2):
                    x, hx = random_inputs(ours, lengths, 30, with_hx=True)
                    out, state = ours(x, hx, lengths=lengths)
                    g = torch.autograd.grad(out.sum(), [x] + list(ours.parameters()))
                    runs.append([out] + list(g))
                for a, b in zip(*runs):
                    assert torch.equal(a, b)  # bitwise identical across repeated runs
                results[(dtype, n)] = runs[0]
        for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 1e-6)):
            ns = sorted(n for d, n in results if d == dtype)
            for a, b in zip(results[(dtype, ns[0])], results[(dtype, ns[-1])]):
                scale = max(1.0, b.abs().max().item())
                assert (a - b).abs().max().item() <= tol * scale
    finally:
        torch.set_num_threads(threads)


def _layer_results(cell, dtype, lengths, proj=0, T=40):
    """One 2-layer bidirectional module's out and h_n (forward) and every gradient (backward)."""
    kw = {"proj_size": proj} if proj else {}
    ours, _ = make_pair(cell, 24, 48, dtype=dtype, num_layers=2, bidirectional=True, **kw)
    g = torch.Generator().manual_seed(0)  # not the global one: test_concurrent_callers runs this on threads
    ours.load_state_dict({k: torch.randn(v.shape, generator=g, dtype=v.dtype) * 0.2
                          for k, v in ours.state_dict().items()})
    x, hx = random_inputs(ours, lengths, T, with_hx=True)
    out, state = ours(x, hx, lengths=lengths)
    h_n = state[0] if isinstance(state, tuple) else state
    grads = torch.autograd.grad(out.sum(), [x] + list(ours.parameters()))
    return [out.detach(), h_n.detach()], list(grads)


@pytest.mark.parametrize("cell,proj", [("LSTM", 0), ("LSTM", 16), ("GRU", 0), ("RNN_TANH", 0)])
def test_more_threads_than_cores(cell, proj, tune):
    """The CPU recurrence with more workers than cores (descheduled workers, stolen chunks, a worker
    taking the call alone) gives the 1-thread results: the forward bitwise in fp32 (all of it runs
    on packedrnn's own products, whose sums do not depend on the split), the backward within 1e-6
    of each tensor's scale (its weight gradients are BLAS's, which round by thread count)."""
    tune(backend="cpu")
    lengths = [40, 17, 0, 40, 5, 33, 9, 40, 1, 28, 40, 12, 3, 40, 22, 31]
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        want = _layer_results(cell, torch.float32, lengths, proj)
        torch.set_num_threads(3 * (os.cpu_count() or 1))
        for _ in range(3):
            got = _layer_results(cell, torch.float32, lengths, proj)
            for a, b in zip(got[0], want[0]):
                assert torch.equal(a, b)
            for a, b in zip(got[1], want[1]):  # 1e-6 of the tensor's scale, as across thread counts
                assert (a - b).abs().max().item() <= 1e-6 * max(1.0, b.abs().max().item())
    finally:
        torch.set_num_threads(threads)


def test_concurrent_callers(tune):
    """Calls from several Python threads at once (each its own parallel region) do not mix."""
    import threading

    tune(backend="cpu")
    cases = [("LSTM", [40, 3, 0, 40, 17, 22, 9, 31]), ("GRU", [12, 40, 40, 1, 0, 5, 38, 20])]
    want = {cell: _layer_results(cell, torch.float64, lengths) for cell, lengths in cases}
    errors = []

    def run(cell, lengths):
        try:
            for _ in range(3):
                got = _layer_results(cell, torch.float64, lengths)
                for a, b in zip(got[0] + got[1], want[cell][0] + want[cell][1]):
                    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
        except Exception as e:  # noqa: BLE001 - reported below, on the test's thread
            errors.append(e)

    workers = [threading.Thread(target=run, args=case) for case in cases * 2]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert not errors, errors[0]


@pytest.mark.parametrize("tokens", ["", "0", "1"])
def test_which_cuda_layers_gather(tokens, tune):
    """Host lengths reach the CUDA op (which then gathers the valid rows) where the forward
    products skipped are worth it: the GPU suite's rows (bench.py) on either side of GATHER_FLOPS."""
    from packedrnn.plan import gathers
    tune(tokens=tokens or None)
    rows = [  # case, whether each layer gathers by default
        (Case("LSTM", 64, 100, 256, train=True, lo=0.1), [False]),  # 1.6 GFLOP skipped
        (Case("LSTM", 8, 1000, 512, lo=0.5), [False]),  # 3.8
        (Case("LSTM", 32, 2000, 128, train=True, lo=0.05), [False]),  # 3.4
        (Case("LSTM", 64, 500, 512, layers=2, bidir=True, lo=0.25), [True, True]),  # 49, 98
        (Case("GRU", 64, 500, 512, layers=2, bidir=True, lo=0.25), [True, True]),  # 37, 73
        (Case("LSTM", 256, 200, 1024, lo=0.25), [True]),  # 168
        (Case("LSTM", 256, 200, 1024, dtype="bf16", lo=0.25), [False]),  # half types never
        (Case("LSTM", 256, 200, 1024, lo=1.0), [False]),  # every row T long: nothing to skip
    ]
    for case, want in rows:
        D = 2 if case.bidir else 1
        G = CELLS[case.cell].gates * case.H
        for layer, expected in enumerate(want):
            I = case.input_size if layer == 0 else D * case.H
            x = torch.empty(case.T, case.B, I, dtype=DTYPES[case.dtype], device="meta")
            got = gathers(x, case.lengths(), G, D)
            assert got == (expected if tokens == "" else tokens == "1"), (case.label(), layer)


@pytest.mark.parametrize("device,host_lengths", [(d, False) for d in OP_DEVICES] + (
    [("cuda", ""), ("cuda", "1")] if "cuda" in OP_DEVICES else []))
def test_torch_compile_fullgraph_dynamic_no_recompile(tune, device, host_lengths):
    """host_lengths (CUDA): the lengths on the CPU, by default (under compile the op gets a device
    copy) and with tokens forced on (the op gets them as they are and gathers: its saved rows are
    then an unbacked size, as always on the CPU)."""
    tune(backend=device)
    if host_lengths is not False:
        tune(tokens=host_lengths or None)
    torch._dynamo.reset()
    ours, _ = make_pair("LSTM", 3, 4, num_layers=2, bidirectional=True, batch_first=True, proj_size=2,
                       device=device)

    def step(x, lengths):
        out, (h, c) = ours(x, lengths=lengths)
        return out, h, c

    compiled = torch.compile(step, fullgraph=True, dynamic=True)
    with torch._dynamo.config.patch(error_on_recompile=False):
        shapes = [(4, 6, [3, 6, 1, 4]), (5, 9, [9, 2, 2, 7, 0]), (3, 4, [1, 4, 2])]
        for i, (B, T, lengths) in enumerate(shapes):
            if i == 1:  # everything after the first call must reuse the graph
                torch._dynamo.config.error_on_recompile = True
            x = torch.randn(B, T, 3, dtype=torch.float64, device=device, requires_grad=True)
            lens = torch.tensor(lengths, device="cpu" if host_lengths is not False else device)
            leaves = [x, *ours.parameters()]
            assert_same_results_and_grads(compiled(x, lens), step(x, lens), leaves, leaves, atol=1e-12)
        torch._dynamo.config.error_on_recompile = False


def test_jit_build_into_a_temp_dir(tmp_path):
    """The just-in-time path, in a fresh interpreter: builds, registers, and matches the reference."""
    script = textwrap.dedent("""
        import torch, packedrnn
        from packedrnn import _build
        assert packedrnn.backend("cpu") == "cpu", _build.unavailable_reason()
        m = packedrnn.PackedGRU(3, 4, bidirectional=True, dtype=torch.float64)
        x = torch.randn(5, 3, 3, dtype=torch.float64)
        a = m(x, lengths=[5, 0, 2])[0]
        with packedrnn.tuning(backend="reference"):
            b = m(x, lengths=[5, 0, 2])[0]
        assert (a - b).abs().max() < 1e-12
        print("JIT OK")
    """)
    env = dict(os.environ, PACKEDRNN_FORCE_JIT="1", TORCH_EXTENSIONS_DIR=str(tmp_path),
               MAX_JOBS=str(os.cpu_count() or 2))
    env.pop("PACKEDRNN_BACKEND", None)
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                         timeout=900)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "JIT OK" in run.stdout
    assert "compiling the C++" in run.stderr and str(tmp_path) in run.stderr


def _fresh_python(code, env_extra, cwd, pythonpath=None):
    env = dict(os.environ)
    env.pop("PACKEDRNN_BACKEND", None)
    env.update(env_extra)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_module_built_for_another_torch_is_refused_loudly(tmp_path):
    import shutil
    pkg = os.path.dirname(packedrnn.__file__)
    copy = tmp_path / "packedrnn"
    shutil.copytree(pkg, copy, ignore=shutil.ignore_patterns("__pycache__", "csrc"))
    (copy / "_C.torch_version").write_text("0.0.0")
    run = _fresh_python("""
        import warnings
        warnings.simplefilter("always")
        import packedrnn
        from packedrnn import _build
        assert not _build.loaded()
        print("refused")
    """, {"PACKEDRNN_BACKEND": "reference"}, cwd=str(tmp_path), pythonpath=str(tmp_path))
    assert run.returncode == 0, run.stderr
    assert "refused" in run.stdout
    assert "was built against torch 0.0.0" in run.stderr and "It is NOT loaded" in run.stderr


def test_no_compiler_falls_back_to_the_reference_with_one_warning(tmp_path):
    run = _fresh_python("""
        import warnings
        import torch, packedrnn
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert packedrnn.backend("cpu") == "reference"
            assert packedrnn.backend("cpu") == "reference"  # decided once
        m = packedrnn.PackedGRU(3, 4)
        m(torch.randn(5, 2, 3), lengths=[5, 2])
        print(len([w for w in caught if "reference" in str(w.message)]))
    """, {"PACKEDRNN_FORCE_JIT": "1", "TORCH_EXTENSIONS_DIR": str(tmp_path), "CXX": "/nonexistent/c++"},
        cwd=str(tmp_path))
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip().splitlines()[-1] == "1"
