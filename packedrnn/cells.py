"""The cells packedrnn runs, one entry each: the reference math, the weight layout and what the
compiled ops need to know. The compiled ops' math for each is one header in csrc/cells/ (its
kCode is the `code` here); everything else (functional, ops, reference, modules) asks this
registry and never branches on a cell's name.

Adding a cell: its header in csrc/cells/ (and a line in with_cell, csrc/cells.h), an entry here,
a module in modules.py if users should get one, and the tests (docs/ARCHITECTURE.md walks through
the Elman cell, which was added this way).
"""

from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

import torch
from torch import Tensor


@dataclass(frozen=True)
class Cell:
    name: str          # nn.LSTM/nn.GRU/nn.RNN's mode string
    code: int          # the ops' `cell` argument: kCode of csrc/cells/*.h
    gates: int         # weight_ih and weight_hh have gates * hidden_size rows
    cell_state: bool   # carries c beside h (hx is (h0, c0), the state (h_n, c_n))
    projection: bool   # proj_size may be > 0
    acts: int          # values per unit the compiled forward keeps for the backward (kAct)
    # step(gx, gh, h, c) -> (h', c'): gx = x W_ih^T + b_ih, gh = h W_hh^T + b_hh, [B, G] each; h, c
    # [B, H] (c None for cells without one). The projection, if any, is applied by the caller.
    step: Callable[[Tensor, Tensor, Tensor, Optional[Tensor]], Tuple[Tensor, Optional[Tensor]]]

    def saved_width(self, H: int, P: int, proj: bool) -> int:
        """K of the compiled forward's saved rows (SavedLayout, csrc/cells.h)."""
        return self.acts * H + (H if self.cell_state else 0) + (H if proj else 0) + P


def _lstm(gx: Tensor, gh: Tensor, h: Tensor, c: Optional[Tensor]):
    i, f, g, o = (gx + gh).chunk(4, dim=-1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def _gru(gx: Tensor, gh: Tensor, h: Tensor, c: Optional[Tensor]):
    xr, xz, xn = gx.chunk(3, dim=-1)
    hr, hz, hn = gh.chunk(3, dim=-1)
    r = torch.sigmoid(xr + hr)
    z = torch.sigmoid(xz + hz)
    n = torch.tanh(xn + r * hn)
    return (1 - z) * n + z * h, None


def _rnn_tanh(gx: Tensor, gh: Tensor, h: Tensor, c: Optional[Tensor]):
    return torch.tanh(gx + gh), None


def _rnn_relu(gx: Tensor, gh: Tensor, h: Tensor, c: Optional[Tensor]):
    return torch.relu(gx + gh), None


CELLS: Dict[str, Cell] = {c.name: c for c in (
    Cell("LSTM", 0, gates=4, cell_state=True, projection=True, acts=4, step=_lstm),
    Cell("GRU", 1, gates=3, cell_state=False, projection=False, acts=4, step=_gru),
    Cell("RNN_TANH", 2, gates=1, cell_state=False, projection=False, acts=1, step=_rnn_tanh),
    Cell("RNN_RELU", 3, gates=1, cell_state=False, projection=False, acts=1, step=_rnn_relu),
)}


BY_CODE: Dict[int, Cell] = {c.code: c for c in CELLS.values()}


def get(name: str) -> Cell:
    """The cell called `name` (LSTM, GRU, RNN_TANH, RNN_RELU); a PackedRNNError for any other."""
    cell = CELLS.get(name) if isinstance(name, str) else None
    if cell is None:
        from .validation import fail
        fail(f"cell {name!r} is not one of {', '.join(CELLS)}")
    return cell
