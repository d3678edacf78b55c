"""PackedLSTM, PackedGRU and PackedRNN: drop-in nn.LSTM / nn.GRU / nn.RNN that take a lengths vector.

Same constructor, parameter names, shapes, initialisation and state_dict as nn.LSTM / nn.GRU /
nn.RNN. Each module is its cell's name (packedrnn.cells) and nn's constructor checks; the rest is
shared.
They derive from nn.Module rather than nn.RNNBase on purpose: torch.compile treats nn.RNNBase
subclasses as unsupported (a graph break), and the cuDNN flat-weight machinery is of no use here.
"""

import math
import numbers
import warnings

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence

from . import cells, functional
from .validation import check_unbatched_lengths, fail


class _PackedRNNBase(nn.Module):
    _cell = ""  # a packedrnn.cells name
    __constants__ = ["input_size", "hidden_size", "num_layers", "bias", "batch_first",
                     "dropout", "bidirectional", "proj_size"]

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 proj_size: int = 0, device=None, dtype=None) -> None:
        super().__init__()
        # The same checks, in the same order and with the same exception types, as nn.RNNBase.
        if (not isinstance(dropout, numbers.Number) or isinstance(dropout, bool)
                or not 0 <= dropout <= 1):
            raise ValueError("dropout should be a number in range [0, 1] representing the "
                             "probability of an element being zeroed")
        if dropout > 0 and num_layers == 1:
            warnings.warn("dropout option adds dropout after all but last recurrent layer, so "
                          "non-zero dropout expects num_layers greater than 1, but got "
                          f"dropout={dropout} and num_layers={num_layers}", stacklevel=3)
        for name, value, kind in (("bias", bias, bool), ("batch_first", batch_first, bool),
                                  ("input_size", input_size, int),
                                  ("hidden_size", hidden_size, int)):
            if not isinstance(value, kind):
                raise TypeError(f"{name} should be of type {kind.__name__}, got: "
                                f"{type(value).__name__}")
        if input_size <= 0:
            raise ValueError("input_size must be greater than zero")
        if hidden_size <= 0:
            raise ValueError("hidden_size must be greater than zero")
        if num_layers <= 0:
            raise ValueError("num_layers must be greater than zero")
        if proj_size < 0:
            raise ValueError("proj_size should be a positive integer or zero to disable projections")
        if proj_size >= hidden_size:
            raise ValueError("proj_size has to be smaller than hidden_size")

        self.mode = self._cell
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bidirectional
        self.proj_size = proj_size

        factory = {"device": device, "dtype": dtype}
        gate_size = self._spec.gates * hidden_size
        real_hidden = proj_size if proj_size > 0 else hidden_size
        D = 2 if bidirectional else 1
        self._flat_weights_names = []
        self._all_weights = []
        for layer in range(num_layers):
            for direction in range(D):
                layer_input = input_size if layer == 0 else real_hidden * D
                shapes = [("weight_ih", (gate_size, layer_input)),
                          ("weight_hh", (gate_size, real_hidden))]
                if bias:
                    shapes += [("bias_ih", (gate_size,)), ("bias_hh", (gate_size,))]
                if proj_size > 0:
                    shapes += [("weight_hr", (proj_size, hidden_size))]
                suffix = "_reverse" if direction == 1 else ""
                names = []
                for stem, shape in shapes:
                    name = f"{stem}_l{layer}{suffix}"
                    setattr(self, name, nn.Parameter(torch.empty(shape, **factory)))
                    names.append(name)
                self._flat_weights_names.extend(names)
                self._all_weights.append(names)
        self.reset_parameters()

    @property
    def _spec(self) -> cells.Cell:
        return cells.get(self._cell)

    def reset_parameters(self) -> None:
        """uniform(-1/sqrt(H), 1/sqrt(H)) over the parameters in order, as nn.LSTM / nn.GRU."""
        stdv = 1.0 / math.sqrt(self.hidden_size) if self.hidden_size > 0 else 0
        for weight in self.parameters():
            nn.init.uniform_(weight, -stdv, stdv)

    def __prepare_scriptable__(self):
        fail(functional.TORCHSCRIPT)  # torch.jit.script asks every submodule first

    def flatten_parameters(self) -> None:
        """Does nothing: there is no cuDNN flat buffer; kept so code written for nn.LSTM runs."""

    @property
    def _flat_weights(self):
        # Read at call time through getattr, so parametrizations (weight_norm, parametrize) apply.
        return [getattr(self, name) for name in self._flat_weights_names]

    @property
    def all_weights(self):
        return [[getattr(self, name) for name in names] for names in self._all_weights]

    def extra_repr(self) -> str:
        s = "{input_size}, {hidden_size}"
        if self.proj_size != 0:
            s += ", proj_size={proj_size}"
        if self.num_layers != 1:
            s += ", num_layers={num_layers}"
        if self.bias is not True:
            s += ", bias={bias}"
        if self.batch_first is not False:
            s += ", batch_first={batch_first}"
        if self.dropout != 0:
            s += ", dropout={dropout}"
        if self.bidirectional is not False:
            s += ", bidirectional={bidirectional}"
        return s.format(**self.__dict__)

    def _run(self, input: Tensor, hx, lengths, batch_first: bool):
        return functional.rnn(
            self._cell, input, hx, self._flat_weights, lengths=lengths,
            hidden_size=self.hidden_size, num_layers=self.num_layers, bias=self.bias,
            batch_first=batch_first, dropout=self.dropout, training=self.training,
            bidirectional=self.bidirectional, proj_size=self.proj_size,
            weight_names=self._flat_weights_names)

    def forward(self, input, hx=None, lengths=None):
        if isinstance(input, PackedSequence):
            if lengths is not None:
                fail("lengths must be None when input is a PackedSequence (it carries its own)")
            return self._forward_packed(input, hx)
        if not isinstance(input, Tensor):
            fail(f"input must be a Tensor or a PackedSequence, got {type(input).__name__}")
        if input.dim() == 2:
            return self._forward_unbatched(input, hx, lengths)
        out, h, c = self._run(input, hx, lengths, self.batch_first)
        return out, self._state(h, c)

    def _state(self, h, c):
        return (h, c) if self._spec.cell_state else h

    def _split_hx(self, hx):
        if hx is None:
            return []
        if self._spec.cell_state:
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                fail(f"hx for {self._cell} must be a tuple (h0, c0), got {type(hx).__name__}")
            return list(hx)
        return [hx]

    def _forward_unbatched(self, input: Tensor, hx, lengths):
        # nn.LSTM's unbatched form: input [T, I], hx [L*D, H]; lengths an int or None.
        lengths = check_unbatched_lengths(lengths)
        states = self._split_hx(hx)
        for i, s in enumerate(states):
            if not isinstance(s, Tensor) or s.dim() != 2:
                fail(f"for unbatched 2-D input, hx[{i}] must be 2-D, got "
                     f"{s.dim() if isinstance(s, Tensor) else type(s).__name__}-D")
        states = [s.unsqueeze(1) for s in states]
        hx = (tuple(states) if self._spec.cell_state else states[0]) if states else None
        out, h, c = self._run(input.unsqueeze(1), hx, lengths, False)
        return out.squeeze(1), self._state(h.squeeze(1), c.squeeze(1) if c is not None else None)

    def _forward_packed(self, packed: PackedSequence, hx):
        # Unpack to the caller's order, run on padded + lengths, repack with the input's own
        # batch_sizes and permutation, so the result is the PackedSequence nn.LSTM returns.
        padded, lengths = pad_packed_sequence(packed)  # [T, B, I], caller's order
        out, h, c = self._run(padded, hx, lengths, False)
        order = packed.sorted_indices
        if order is not None:
            out = out.index_select(1, order)
            lengths = lengths.index_select(0, order.cpu())
        data, batch_sizes = torch._C._VariableFunctions._pack_padded_sequence(out, lengths, False)
        return (PackedSequence(data, batch_sizes, packed.sorted_indices, packed.unsorted_indices),
                self._state(h, c))


class PackedLSTM(_PackedRNNBase):
    """nn.LSTM for variable-length batches: `forward(input, hx=None, lengths=None)`.

    input    [B, T, I] (batch_first) or [T, B, I]; [T, I] unbatched; or a PackedSequence.
    lengths  B ints in [0, T]: a list, a CPU tensor or a tensor on input's device, any order,
             zeros allowed. None means every row has length T.
    hx       (h0 [L*D, B, P], c0 [L*D, B, H]) in the caller's batch order, or None for zeros.
    Returns  output [B, T, D*P] (or time-major), exactly zero at t >= lengths[b], and
             (h_n, c_n): each row's state after its own last valid step (the reverse direction
             of a bidirectional layer starts at t = lengths[b] - 1); h0/c0 for zero-length rows.
    D = 2 if bidirectional else 1; P = proj_size if > 0 else hidden_size.
    Outputs and gradients equal nn.LSTM on pack_padded_sequence(x, lengths, enforce_sorted=False)
    with the same parameters; padded positions of input never influence any result.
    """

    _cell = "LSTM"


class PackedGRU(_PackedRNNBase):
    """nn.GRU for variable-length batches: `forward(input, hx=None, lengths=None)`.

    As PackedLSTM, with a single state: hx = h0 [L*D, B, H], returns (output, h_n).
    """

    _cell = "GRU"

    def __init__(self, *args, **kwargs) -> None:
        if "proj_size" in kwargs:
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        if len(args) > 7:
            raise TypeError("PackedGRU takes at most 7 positional arguments (as nn.GRU)")
        super().__init__(*args, **kwargs)


class PackedRNN(_PackedRNNBase):
    """nn.RNN (the Elman cell, h_t = tanh or relu of x W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh) for
    variable-length batches: `forward(input, hx=None, lengths=None)`.

    Constructor as nn.RNN: (input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True,
    batch_first=False, dropout=0.0, bidirectional=False, device=None, dtype=None). As PackedGRU
    otherwise: hx = h0 [L*D, B, H], returns (output, h_n).
    """

    _cell = "RNN_TANH"

    def __init__(self, *args, **kwargs) -> None:
        # nn.RNN's own order of checks and messages.
        if "proj_size" in kwargs:
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        if len(args) > 3:
            self.nonlinearity = args[3]
            args = args[:3] + args[4:]
        else:
            self.nonlinearity = kwargs.pop("nonlinearity", "tanh")
        if self.nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"Unknown nonlinearity '{self.nonlinearity}'. Select from 'tanh' or 'relu'.")
        if len(args) > 7:
            raise TypeError("PackedRNN takes at most 8 positional arguments (as nn.RNN)")
        self._cell = "RNN_TANH" if self.nonlinearity == "tanh" else "RNN_RELU"
        super().__init__(*args, **kwargs)


_CONVERSIONS = {nn.LSTM: PackedLSTM, nn.GRU: PackedGRU, nn.RNN: PackedRNN}


def convert(module: nn.Module) -> nn.Module:
    """`module` with every nn.LSTM, nn.GRU and nn.RNN in it replaced by PackedLSTM, PackedGRU and
    PackedRNN with the same configuration, weights (the same Parameter objects: an optimizer built
    before keeps working), device, dtype and training mode; returns the new module where `module`
    itself is one, else `module`, changed in place (as nn.SyncBatchNorm.convert_sync_batchnorm).

    Code that calls them as before keeps working: a PackedSequence in gives a PackedSequence out,
    a padded batch without lengths runs every row to T; passing `lengths=` (or a third positional
    argument) is what skips the padding. The new modules are not nn.LSTM subclasses (see the README,
    "Export and deployment"): `isinstance(m, nn.LSTM)` is False for them.
    """
    kind = _CONVERSIONS.get(type(module))
    if kind is not None:
        kw = dict(num_layers=module.num_layers, bias=module.bias, batch_first=module.batch_first,
                  dropout=module.dropout, bidirectional=module.bidirectional, device="meta")
        if kind is PackedLSTM:
            kw["proj_size"] = module.proj_size
        if kind is PackedRNN:
            kw["nonlinearity"] = module.nonlinearity
        new = kind(module.input_size, module.hidden_size, **kw)
        for name in new._flat_weights_names:
            setattr(new, name, getattr(module, name))
        new.train(module.training)
        return new
    for name, child in module.named_children():
        converted = convert(child)
        if converted is not child:
            setattr(module, name, converted)
    return module
