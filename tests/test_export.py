"""Out of the Python process: ONNX export (native LSTM/GRU/RNN nodes, run in ONNX Runtime),
torch.export with dynamic batch, T and lengths (and save/load), torch.jit refused clearly."""

import io

import pytest
import torch
from torch import nn
from torch.export import Dim

import packedrnn
from helpers import OP_DEVICES, make_pair
from packedrnn import PackedRNNError

needs_ops = pytest.mark.skipif("cpu" not in OP_DEVICES, reason="the compiled CPU op is not built")


class Wrapped(nn.Module):
    """A model around one packedrnn module: (x, lengths[, h0[, c0]]) -> (out, h_n[, c_n])."""

    def __init__(self, rnn):
        super().__init__()
        self.rnn = rnn

    def forward(self, x, lengths, *hx):
        state = None if not hx else (tuple(hx) if len(hx) == 2 else hx[0])
        out, state = self.rnn(x, state, lengths=lengths)
        return (out,) + (tuple(state) if isinstance(state, tuple) else (state,))


def _inputs(module, B, T, with_hx, lengths, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*((B, T) if module.batch_first else (T, B)), module.input_size, generator=g)
    D = 2 if module.bidirectional else 1
    hx = ()
    if with_hx:
        hx = (torch.randn(module.num_layers * D, B, module.hidden_size, generator=g),)
        if isinstance(module, packedrnn.PackedLSTM):
            hx += (torch.randn(module.num_layers * D, B, module.hidden_size, generator=g),)
    return x, torch.tensor(lengths), hx


def _dynamic(module, hx):
    time_batch = {0: Dim("B"), 1: Dim("T")} if module.batch_first else {0: Dim("T"), 1: Dim("B")}
    return (time_batch, {0: Dim("B")}) + ((tuple({1: Dim("B")} for _ in hx),) if hx else ())  # *hx: one tuple


# Every feature at least once, the cells each in several layouts (an exhaustive product would
# take minutes of export time for nothing more: each layer is one node whatever the rest).
ONNX_CASES = [  # cell, layers, bidirectional, batch_first, bias, with_hx
    ("LSTM", 1, False, False, True, False),
    ("LSTM", 2, True, True, True, True),
    ("LSTM", 1, True, False, False, True),
    ("GRU", 1, False, True, True, True),
    ("GRU", 2, True, False, False, False),
    ("RNN_TANH", 2, True, True, True, False),
    ("RNN_RELU", 1, False, False, False, True),
]


@needs_ops
@pytest.mark.parametrize("case", ONNX_CASES, ids=lambda c: "-".join(map(str, c)))
def test_onnx_export_runs_in_onnxruntime(case, tmp_path):
    pytest.importorskip("onnxscript")
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    cell, layers, bidirectional, batch_first, bias, with_hx = case
    torch.manual_seed(0)
    module, _ = make_pair(cell, 3, 5, dtype=torch.float32, num_layers=layers, bidirectional=bidirectional,
                          batch_first=batch_first, bias=bias)
    model = Wrapped(module.eval())
    x, lengths, hx = _inputs(module, 4, 6, with_hx, [6, 0, 3, 6], seed=1)  # a zero, a tie at T
    path = tmp_path / "model.onnx"
    torch.onnx.export(model, (x, lengths, *hx), str(path), dynamo=True, dynamic_shapes=_dynamic(module, hx))

    graph = onnx.load(str(path)).graph
    nodes = [n.op_type for n in graph.node if n.op_type in ("LSTM", "GRU", "RNN")]
    assert nodes == [cell[:4].rstrip("_")] * layers, nodes  # one native node per layer
    session = ort.InferenceSession(str(path))
    names = [i.name for i in session.get_inputs()]
    for B, T, lens in ((3, 9, [2, 9, 0]), (6, 4, [1, 3, 3, 0, 2, 2])):  # new sizes, max(lengths) < T
        x, lengths, hx = _inputs(module, B, T, with_hx, lens, seed=B)
        got = session.run(None, dict(zip(names, [t.numpy() for t in (x, lengths, *hx)])))
        with torch.no_grad():
            want = model(x, lengths, *hx)
        assert len(got) == len(want)
        for g, w in zip(got, want):
            torch.testing.assert_close(torch.from_numpy(g), w, rtol=0, atol=1e-5)


@needs_ops
def test_onnx_export_refuses_a_projection():
    pytest.importorskip("onnxscript")
    module = packedrnn.PackedLSTM(3, 5, proj_size=2).eval()
    x, lengths, _ = _inputs(module, 2, 4, False, [4, 2], seed=0)
    with pytest.raises(Exception, match="proj_size > 0 .* has no ONNX form"):
        torch.onnx.export(Wrapped(module), (x, lengths), dynamo=True)


@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_torch_export_dynamic_and_saved(cell):
    torch.manual_seed(0)
    module, _ = make_pair(cell, 3, 4, dtype=torch.float32, num_layers=2, bidirectional=True, batch_first=True)
    model = Wrapped(module)
    x, lengths, _ = _inputs(module, 5, 7, False, [7, 3, 0, 5, 7], seed=0)
    with torch.enable_grad():  # exported in grad mode: inference must still keep nothing for a backward
        program = torch.export.export(model, (x, lengths), dynamic_shapes=_dynamic(module, ()))
    trains = [n.args[12] for n in program.graph.nodes if "packedrnn.rnn_layer" in str(n.target)]
    assert trains and all(t is False for t in trains)  # decided when the graph runs (ops._autograd_kernel)
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    buffer.seek(0)
    loaded = torch.export.load(buffer).module()
    for B, T, lens in ((3, 9, [2, 9, 0]), (8, 2, [1, 2, 0, 2, 1, 1, 2, 2])):
        x, lengths, _ = _inputs(module, B, T, False, lens, seed=B)
        with torch.no_grad():
            for got, want in zip(loaded(x, lengths), model(x, lengths)):
                torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_torch_jit_is_refused_clearly():
    module = packedrnn.PackedLSTM(3, 4)
    x, lengths = torch.randn(5, 2, 3), torch.tensor([5, 2])
    with pytest.raises(PackedRNNError, match="torch.export"):
        torch.jit.trace(Wrapped(module), (x, lengths))
    with pytest.raises(PackedRNNError, match="torch.export"):
        torch.jit.script(Wrapped(module))


@needs_ops
@pytest.mark.slow
def test_aoti_package_runs_the_op(tmp_path):
    """torch._inductor's ahead-of-time packaging takes the custom op (about 40 s to compile here)."""
    module = packedrnn.PackedGRU(3, 4, batch_first=True).eval()
    model = Wrapped(module)
    x, lengths, _ = _inputs(module, 5, 7, False, [7, 3, 0, 5, 7], seed=0)
    program = torch.export.export(model, (x, lengths), dynamic_shapes=_dynamic(module, ()))
    path = torch._inductor.aoti_compile_and_package(program, package_path=str(tmp_path / "gru.pt2"))
    runner = torch._inductor.aoti_load_package(path)
    x, lengths, _ = _inputs(module, 3, 9, False, [2, 9, 0], seed=3)
    with torch.no_grad():
        for got, want in zip(runner(x, lengths), model(x, lengths)):
            torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
