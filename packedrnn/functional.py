"""The single functional entry point: validation, layout, the layer loop, inter-layer dropout.

Each layer (both directions together) goes to one backend:
  "cpu" / "cuda"  the compiled custom ops (packedrnn.ops), when the extension is loaded;
  "reference"     packedrnn.reference, pure PyTorch, anywhere.
packedrnn.plan picks the backend and, for CUDA, where the lengths go (its switches force either).
"""

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from . import cells, plan, reference
from .validation import check_hidden, check_input, check_weights, fail, lengths_to_tensor


# torch.jit (deprecated by PyTorch itself) cannot capture a call: the lengths' checks and the token
# index are Python, whose sizes a trace would fix to the example's.
TORCHSCRIPT = ("packedrnn modules cannot be traced or scripted with torch.jit (a trace would fix the "
               "example's batch size and T, and skip the checks of the lengths). Use torch.export.export "
               "(dynamic batch, T and lengths), torch.compile, or torch.onnx.export(..., dynamo=True) (native "
               "ONNX LSTM/GRU/RNN nodes) instead.")


HALF_TYPES = (torch.bfloat16, torch.float16)


def _cast(t, dtype):
    """t (a tensor, a tuple of them or None) in `dtype` where floating; as it is for dtype None."""
    if dtype is None or t is None:
        return t
    if isinstance(t, (tuple, list)):
        return type(t)(_cast(u, dtype) for u in t)
    return t.to(dtype) if isinstance(t, Tensor) and t.is_floating_point() else t


def _layer_weights(weights: Sequence[Tensor], layer: int, per_dir: int, D: int, bias: bool,
                   proj: bool) -> List[Tuple[Tensor, ...]]:
    """[(w_ih, w_hh, b_ih, b_hh, w_hr) for each direction], None where absent."""
    groups = []
    for d in range(D):
        w = list(weights[(layer * D + d) * per_dir:(layer * D + d + 1) * per_dir])
        w_ih, w_hh = w[0], w[1]
        b_ih, b_hh = (w[2], w[3]) if bias else (None, None)
        w_hr = w[-1] if proj else None
        groups.append((w_ih, w_hh, b_ih, b_hh, w_hr))
    return groups


def rnn(cell: str, input: Tensor, hx, weights: Sequence[Tensor], *, lengths=None,
        hidden_size: int, num_layers: int, bias: bool = True, batch_first: bool = False,
        dropout: float = 0.0, training: bool = False, bidirectional: bool = False,
        proj_size: int = 0, weight_names: Optional[Sequence[str]] = None):
    """A variable-length multi-layer RNN over a padded batch; `cell` is a packedrnn.cells name:
    "LSTM", "GRU", "RNN_TANH" or "RNN_RELU" (nn.LSTM, nn.GRU, nn.RNN's modes).

    input   [B, T, I] if batch_first else [T, B, I]; padding may hold anything (NaN included)
    lengths B ints in [0, T] (list, CPU tensor or tensor on input's device), or None for all T
    hx      LSTM: (h0 [L*D, B, P], c0 [L*D, B, H]); other cells: h0 [L*D, B, H]; or None for zeros
    weights nn.LSTM/nn.GRU/nn.RNN's _flat_weights order
    Returns output [B, T, D*P] (or time-major), exactly zero past each length; h_n [L*D, B, P];
    c_n [L*D, B, H] (None without a cell state). h_n/c_n hold each row's state after its own last
    valid step.
    """
    if torch.jit.is_tracing():
        fail(TORCHSCRIPT)
    spec = cells.get(cell)
    kwargs = dict(lengths=lengths, hidden_size=hidden_size, num_layers=num_layers, bias=bias,
                  batch_first=batch_first, dropout=dropout, training=training, bidirectional=bidirectional,
                  proj_size=proj_size, weight_names=weight_names)
    if isinstance(input, Tensor) and input.device.type in ("cpu", "cuda") and \
            torch.is_autocast_enabled(input.device.type):
        # As nn + packing under autocast: on CUDA the autocast dtype in and out; on the CPU fp32
        # (nn.LSTM/GRU on a PackedSequence are not autocast there).
        dtype = torch.get_autocast_dtype(input.device.type) if input.device.type == "cuda" else None
        with torch.autocast(input.device.type, enabled=False):
            return rnn(spec.name, _cast(input, dtype), _cast(hx, dtype), [_cast(w, dtype) for w in weights],
                       **kwargs)
    if (isinstance(input, Tensor) and input.device.type == "cpu" and input.dtype in HALF_TYPES
            and all(t is None or (isinstance(t, Tensor) and t.dtype == input.dtype)
                    for t in [*weights, *(hx if isinstance(hx, (tuple, list)) else [hx])])
            and plan.backend(input.device, input.dtype) == "cpu"):
        # The CPU op takes half types through fp32 (as the CUDA op accumulates them in fp32):
        # the casts are differentiable, results and gradients come back in the caller's dtype.
        out, h, c = rnn(spec.name, _cast(input, torch.float32), _cast(hx, torch.float32),
                        [_cast(w, torch.float32) for w in weights], **kwargs)
        return out.to(input.dtype), h.to(input.dtype), None if c is None else c.to(input.dtype)
    D = 2 if bidirectional else 1
    P = proj_size if proj_size > 0 else hidden_size
    if proj_size > 0 and not spec.projection:
        fail(f"proj_size = {proj_size}: {spec.name} has no projection (only LSTM)")
    per_dir = 2 + 2 * int(bias) + int(proj_size > 0)
    if len(weights) != num_layers * D * per_dir:
        fail(f"expected {num_layers * D * per_dir} weight tensors, got {len(weights)}")
    names = weight_names or [f"weights[{i}]" for i in range(len(weights))]
    G = spec.gates * hidden_size
    for i in range(0, len(weights), per_dir):  # weight_ih and weight_hh of each layer and direction
        first = i < D * per_dir  # layer 0: weight_ih's columns are input's features (check_input)
        for w, name, cols in ((weights[i], names[i], None if first else D * P), (weights[i + 1], names[i + 1], P)):
            if w.dim() != 2 or w.shape[0] != G or (cols is not None and w.shape[1] != cols):
                fail(f"{name} has shape {tuple(w.shape)}, expected ({G}, {cols if cols is not None else 'input_size'}) "
                     f"for {spec.name}: {spec.gates} gate(s) x hidden_size {hidden_size}")
    check_input(input, weights[0].shape[1])
    check_weights(input, weights, names)

    x = input.transpose(0, 1) if batch_first else input  # [T, B, I]
    T, B = x.shape[0], x.shape[1]
    given = None if lengths is None else lengths_to_tensor(lengths, B, T)
    lens = plan.CallLengths(given, x.device, B, T)
    which = plan.backend(x.device, x.dtype)
    if given is not None and not lens.by_token(which, x, G, D):
        # Padding never reaches a result, but a layer that reads every position needs it finite
        # (an op that runs by token never reads it: x goes as given).
        x = reference.zero_padding(x, lens.device)

    has_c = spec.cell_state
    if hx is None:
        h0 = x.new_zeros(num_layers * D, B, P)
        c0 = x.new_zeros(num_layers * D, B, hidden_size) if has_c else None
    elif has_c:
        if not isinstance(hx, (tuple, list)) or len(hx) != 2:
            fail(f"hx for {spec.name} must be a tuple (h0, c0), got {type(hx).__name__}")
        h0, c0 = hx
        check_hidden("hx[0] (h0)", "hidden[0]", h0, (num_layers * D, B, P), x)
        check_hidden("hx[1] (c0)", "hidden[1]", c0, (num_layers * D, B, hidden_size), x)
    else:
        h0, c0 = hx, None
        check_hidden("hx (h0)", "hidden", h0, (num_layers * D, B, hidden_size), x)

    path = plan.path()
    h_n, c_n = [], []
    for layer in range(num_layers):
        groups = _layer_weights(weights, layer, per_dir, D, bias, proj_size > 0)
        rows = slice(layer * D, (layer + 1) * D)
        if which == "reference":
            outs = []
            for d, (w_ih, w_hh, b_ih, b_hh, w_hr) in enumerate(groups):
                out, h, c = reference.layer(spec, x, lens.device, h0[layer * D + d],
                                            c0[layer * D + d] if has_c else None,
                                            w_ih, w_hh, b_ih, b_hh, w_hr, reverse=d == 1)
                outs.append(out)
                h_n.append(h)
                c_n.append(c)
            out = torch.cat(outs, dim=-1) if D == 2 else outs[0]
        else:
            from . import ops
            tokens, host = lens.for_op(which, x, G, D)
            out, h, c = ops.layer(spec, x, lens.device, tokens, host, h0[rows], c0[rows] if has_c else None,
                                  groups, path)
            h_n.extend(h.unbind(0))
            c_n.extend(c.unbind(0) if has_c else [])
        x = out
        if dropout > 0 and training and layer < num_layers - 1:
            x = F.dropout(x, dropout, training=True)

    output = x.transpose(0, 1) if batch_first else x
    return output, torch.stack(h_n), torch.stack(c_n) if has_c else None


def lstm(input: Tensor, hx=None, weights: Sequence[Tensor] = (), **kwargs):
    """`rnn("LSTM", ...)`: returns (output, (h_n, c_n))."""
    out, h, c = rnn("LSTM", input, hx, weights, **kwargs)
    return out, (h, c)


def gru(input: Tensor, hx=None, weights: Sequence[Tensor] = (), **kwargs):
    """`rnn("GRU", ...)`: returns (output, h_n)."""
    out, h, _ = rnn("GRU", input, hx, weights, **kwargs)
    return out, h

