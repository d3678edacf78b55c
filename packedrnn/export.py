"""ONNX export: each packedrnn layer becomes the native ONNX LSTM, GRU or RNN node with
`sequence_lens`, one node per layer, both directions in it.

`torch.onnx.export(model, args, f, dynamo=True)` (torch's exporter) finds the translations by
itself once packedrnn is imported: they join the exporter's registry when the exporter loads it
(install_onnx_translations). Where a torch version loads its registry elsewhere, pass them:
`torch.onnx.export(..., custom_translation_table=packedrnn.onnx_translations())`.

The mapping (ONNX operators LSTM/GRU/RNN, opset 18; PyTorch's gate order -> ONNX's):
  LSTM  i f g o -> i o f c      GRU  r z n -> z r h, linear_before_reset=1     RNN  tanh or relu
  W = w_ih [D, G, I], R = w_hh [D, G, H], B = [b_ih, b_hh] [D, 2G], initial_h = h0, initial_c = c0,
  sequence_lens = lengths (int32), direction "forward" or "bidirectional";
  Y [T, D, B, H] -> out [T, B, D*H]; Y_h, Y_c -> h_n, c_n.
packedrnn's contract is then made explicit around the node, whatever a runtime does past a length
(the ONNX spec leaves it open): out is zero past each length (ONNX Runtime 1.32 zeroes Y there by
itself), and a row of length 0 keeps h0 and c0 (ONNX Runtime gives such a row zeros, not h0: the
node sees length 1 there and the state is chosen after it). A projection (proj_size) has no ONNX
form: export refuses it with a PackedRNNError.
"""

import importlib.abc
import importlib.util
import sys

import torch

from .cells import BY_CODE
from .validation import fail

# ONNX's gate order, as indices of PyTorch's gate blocks (packedrnn.cells), per cell name.
_ONNX_GATES = {"LSTM": [0, 3, 1, 2], "GRU": [1, 0, 2], "RNN_TANH": [0], "RNN_RELU": [0]}


def _rnn_layer(cell: int, x, lengths, tokens=None, host_lengths=None, h0=None, c0=None, w_ih=None, w_hh=None,
               b_ih=None, b_hh=None, w_hr=None, train: bool = False, path: int = 0):
    """packedrnn::rnn_layer in ONNX (csrc/ops.cpp for the shapes). `tokens`, `host_lengths`,
    `train` and `path` only steer the compiled op: the ONNX node needs none of them."""
    from onnxscript import opset18 as op

    spec = BY_CODE[cell]
    if w_hr is not None:
        fail("ONNX export: proj_size > 0 (an LSTM projection) has no ONNX form; export a model "
             "without proj_size, or keep it in PyTorch (torch.export)")
    D, G, P = w_ih.shape[0], w_ih.shape[1], w_hh.shape[2]
    if not all(isinstance(n, int) for n in (D, G, P)):
        fail("ONNX export: the weights' shapes must be static")
    H = G // spec.gates

    def onnx_gates(w):  # [D, G, *] in PyTorch's gate order -> ONNX's
        if spec.gates == 1:
            return w
        blocks = op.Split(w, axis=1, num_outputs=spec.gates)
        return op.Concat(*[blocks[i] for i in _ONNX_GATES[spec.name]], axis=1)

    W, R = onnx_gates(w_ih), onnx_gates(w_hh)
    Bias = None if b_ih is None else op.Concat(onnx_gates(b_ih), onnx_gates(b_hh), axis=1)
    empty = op.Equal(lengths, op.Constant(value_int=0))  # [B] rows of length 0
    seq = op.Cast(op.Max(lengths, op.Constant(value_int=1)), to=6)  # int32, each >= 1 (see above)
    direction = "bidirectional" if D == 2 else "forward"
    if spec.name == "LSTM":
        Y, Y_h, Y_c = op.LSTM(x, W, R, Bias, seq, h0, c0, None, direction=direction, hidden_size=H)
    elif spec.name == "GRU":
        Y, Y_h = op.GRU(x, W, R, Bias, seq, h0, direction=direction, hidden_size=H, linear_before_reset=1)
    else:
        act = "Tanh" if spec.name == "RNN_TANH" else "Relu"
        Y, Y_h = op.RNN(x, W, R, Bias, seq, h0, direction=direction, hidden_size=H, activations=[act] * D)

    # [T, D, B, H] -> [T, B, D*H], zero past each length
    out = op.Reshape(op.Transpose(Y, perm=[0, 2, 1, 3]), op.Constant(value_ints=[0, 0, -1]))
    valid = _valid(op, op.Squeeze(op.Shape(x, start=0, end=1)), lengths)
    zero = op.CastLike(op.Constant(value_float=0.0), x)
    out = op.Where(op.Unsqueeze(valid, op.Constant(value_ints=[2])), out, zero)
    keep = op.Unsqueeze(empty, op.Constant(value_ints=[0, 2]))  # [1, B, 1]
    h_n = op.Where(keep, h0, Y_h)
    nothing = op.CastLike(op.ConstantOfShape(op.Constant(value_ints=[0])), x)  # a [0] tensor
    c_n = op.Where(keep, c0, Y_c) if spec.cell_state else nothing
    saved = nothing  # the backward's buffer: none in an exported model
    return out, h_n, c_n, saved


def _valid(op, T, lengths):
    """[T, B] bool: t < lengths[b], for a scalar int64 T."""
    steps = op.Range(op.Constant(value_int=0), T, op.Constant(value_int=1))
    return op.Less(op.Unsqueeze(steps, op.Constant(value_ints=[1])), op.Unsqueeze(lengths, op.Constant(value_ints=[0])))


def _token_index(lengths, T: int):
    """packedrnn::token_index in ONNX: the flat positions t*B + b with t < lengths[b], time-major."""
    from onnxscript import opset18 as op

    # T: an int where the exported graph has a static T, else the graph's value of the symbol
    end = op.Constant(value_int=T) if isinstance(T, int) else op.Squeeze(op.Cast(T, to=7))  # int64
    valid = _valid(op, end, lengths)
    return op.Reshape(op.NonZero(op.Reshape(valid, op.Constant(value_ints=[-1]))), op.Constant(value_ints=[-1]))


def onnx_translations() -> dict:
    """{op: ONNX translation} for torch.onnx.export's custom_translation_table (empty where the
    compiled ops are absent: the reference backend's graph holds ATen ops only)."""
    from . import _build
    if not _build.load():
        return {}
    return {torch.ops.packedrnn.rnn_layer.default: _rnn_layer,
            torch.ops.packedrnn.token_index.default: _token_index}


_REGISTRY_MODULE = "torch.onnx._internal.exporter._registration"


def _add_to(registration) -> None:
    """Make every registry that torch's exporter builds from its op library hold ours."""
    registry = getattr(registration, "ONNXRegistry", None)
    build = getattr(registry, "from_torchlib", None)
    if build is None or getattr(build, "_packedrnn", False):
        return
    original = build.__func__

    def from_torchlib(cls, *args, **kwargs):
        made = original(cls, *args, **kwargs)
        for target, function in onnx_translations().items():
            made.register_op(target, function)
        return made

    from_torchlib._packedrnn = True
    registry.from_torchlib = classmethod(from_torchlib)


class _WhenImported(importlib.abc.MetaPathFinder):
    """Runs _add_to on the exporter's registry module once it is imported: importing it here would
    cost every user of packedrnn a second (it imports onnxscript)."""

    def find_spec(self, fullname, path, target=None):
        if fullname != _REGISTRY_MODULE:
            return None
        sys.meta_path.remove(self)  # the real finders find it; this runs once
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            _add_to(module)

        spec.loader.exec_module = exec_module
        return spec


def install_onnx_translations() -> None:
    """At import of packedrnn: the translations join torch's exporter registry (see the module
    docstring), now if it is loaded, else when it is."""
    if _REGISTRY_MODULE in sys.modules:
        _add_to(sys.modules[_REGISTRY_MODULE])
    elif not any(isinstance(f, _WhenImported) for f in sys.meta_path):
        sys.meta_path.insert(0, _WhenImported())
