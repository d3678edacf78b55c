"""Nothing changes for a user: the outputs and every gradient of the CPU op and of the emulated CUDA
op (its glue and kernels on the CPU emulator, tests/emulator.py), on fixed seeds, for each
recurrence, exchange, backward form, lengths path and dtype the op runs, equal those recorded in
tests/fixtures/bitwise.pt. Bitwise on the machine kind the file was recorded on (torch version and
CPU capability in its `machine` entry: ATen's GEMMs differ between instruction sets); elsewhere to
1e-12 in fp64, 1e-5 in fp32, 1e-2 in half types, relative to each tensor's largest value.

Re-record only for a change meant to move results (say why in the commit):
    python tests/test_fixtures.py
"""
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from emulator import build_op, needs_emulator, rel_error  # noqa: E402
from test_cuda_op_emulated import GRU, LSTM, case_lengths, cpu_op_args, forward_backward, layer_inputs  # noqa: E402

FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "bitwise.pt")
TOL = {torch.float64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 1e-2}

# cell, I, H, P, B, T, D, dtype
LAYERS = {
    "lstm-bi-f32": (LSTM, 5, 20, 20, 9, 6, 2, torch.float32),
    "gru-f32": (GRU, 4, 12, 12, 7, 5, 1, torch.float32),
    "lstm-proj-bi-f32": (LSTM, 4, 24, 10, 8, 5, 2, torch.float32),
    "gru-bi-f64": (GRU, 3, 10, 10, 6, 5, 2, torch.float64),
    "lstm-proj-f64": (LSTM, 3, 12, 7, 6, 5, 1, torch.float64),
    "lstm-bf16": (LSTM, 4, 16, 16, 5, 4, 1, torch.bfloat16),
    "gru-bi-f16": (GRU, 4, 12, 12, 7, 5, 2, torch.float16),
}
# The op's paths, as packedrnn.tuning's recurrence (the persistent kernels' forward exchange and
# backward form forced or left to the rules). The emulated device is an H100/H200 (sm_90).
PATHS = {
    "persistent": "persistent",
    "persistent-barrier-staged": "persistent:barrier:staged",
    "persistent-tagged-reduce": "persistent:tagged:reduce",
    "step": "step",
    "gemm": "gemm",
}


def cpu_cases():
    return [name for name, layer in LAYERS.items() if layer[7] in (torch.float32, torch.float64)]


def emulated_cases():
    cases = []
    for name, layer in LAYERS.items():
        dtype = layer[7]
        for path, recurrence in PATHS.items():
            if recurrence.startswith("persistent") and dtype == torch.float64:
                continue  # the persistent kernels do not take fp64
            if recurrence == "gemm" and dtype not in (torch.float32, torch.float64):
                continue  # ATen's mm into fp32 from half types is CUDA-only
            if recurrence.endswith("reduce") and (dtype != torch.float32 or layer[3] != layer[2]):
                continue  # the reduce form is fp32's, without a projection
            for where in ("host", "device"):
                cases.append(f"{name}/{path}/{where}")
    return cases


def run(ns, layer, seed, recurrence=None, where=None):
    """One layer's results through the ops of ns; where=None: the CPU op's arguments."""
    cell, I, H, P, B, T, D, dtype = layer
    args, grads = layer_inputs(cell, I, H, P, B, T, D, dtype, case_lengths(B, T), seed=seed, where=where or "host")
    return forward_backward(ns, cpu_op_args(args) if where is None else args, grads, recurrence)


def machine():
    return f"torch {torch.__version__.split('+')[0]}, {torch.backends.cpu.get_cpu_capability()}"


def results(emulated_ops, emu):
    """Every case's results: {name: [out, h_n, c_n, dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, dw_hr]}."""
    found = {}
    for name in cpu_cases():
        found[f"{name}/cpu"] = run(torch.ops.packedrnn, LAYERS[name], seed=5)
    emu.emu_configure(8, 232448, 0)
    for case in emulated_cases():
        name, path, where = case.split("/")
        found[case] = run(emulated_ops, LAYERS[name], seed=5, recurrence=PATHS[path], where=where)
    return found


@pytest.fixture(scope="module")
def recorded():
    if not os.path.exists(FILE):
        pytest.fail(f"{FILE} is missing: record it with `python {__file__}` on an unchanged tree")
    return torch.load(FILE)


@needs_emulator
def test_results_unchanged(recorded, tmp_path_factory):
    ops, emu = build_op(tmp_path_factory.mktemp("fixtures_emu"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the CPU op is bitwise only at a fixed thread count in fp32
    try:
        found = results(ops, emu)
    finally:
        torch.set_num_threads(threads)
    assert set(found) == set(recorded["results"]), "the cases changed: re-record (see the docstring)"
    bitwise = recorded["machine"] == machine()
    bad = []
    for case, mine in found.items():
        for i, (a, b) in enumerate(zip(mine, recorded["results"][case])):
            same = torch.equal(a, b) if bitwise else (a.shape == b.shape and rel_error(a, b) <= TOL[b.dtype])
            if not same or a.dtype != b.dtype:
                bad.append(f"{case}[{i}]")
    assert not bad, f"results moved ({'bitwise' if bitwise else 'to tolerance'}): {bad}"


if __name__ == "__main__":
    import tempfile
    from pathlib import Path

    torch.set_num_threads(1)
    ops, emu = build_op(Path(tempfile.mkdtemp()))
    os.makedirs(os.path.dirname(FILE), exist_ok=True)
    torch.save({"machine": machine(), "results": results(ops, emu)}, FILE)
    print(f"recorded {FILE} ({os.path.getsize(FILE)} bytes) on {machine()}")
