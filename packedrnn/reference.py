"""Pure-PyTorch reference: the executable spec of one variable-length RNN layer.

Runs on any device and is differentiable to any order; the compiled ops recompute their backward
through it where that backward is itself differentiated (packedrnn/ops.py). It is also the
fallback when the compiled extension is unavailable.

Shape legend (time-major, as the ops see it):
  T  padded sequence length          B  batch size            I  input features
  H  hidden units                    P  recurrent state size: proj_size if > 0, else H
  G  gate rows: gates * H (packedrnn.cells: 4 for LSTM, 3 for GRU, 1 for RNN_TANH / RNN_RELU)

The contract, per row b with lengths[b] = L:
  forward direction  walks t = 0 .. L-1,
  reverse direction  walks t = L-1 .. 0 (each row starts at its own last valid step);
  output[t, b] = 0 for t >= L; the final state is the state after the row's last step (h0 if L == 0).
Padded positions of x are never read into a result: steps past a row's length are computed on
whatever is there but every result is selected with torch.where (NaN * 0 would still be NaN).
"""

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .cells import Cell


def reverse_index(lengths: Tensor, T: int) -> Tensor:
    """[T, B] time index that reverses each row's valid prefix and leaves its padding in place.

    It is its own inverse, so the same gather maps inputs into reversed order and outputs back.
    """
    t = torch.arange(T, device=lengths.device)[:, None]
    return torch.where(t < lengths[None, :], lengths[None, :] - 1 - t, t)


def zero_padding(x: Tensor, lengths: Tensor) -> Tensor:
    """x [T, B, ...] with every position past its row's length set to zero (layer() wants finite
    padding; zero also keeps dW_ih = dG^T x free of 0 * NaN)."""
    valid = torch.arange(x.shape[0], device=x.device)[:, None] < lengths[None, :]
    return torch.where(valid.view(valid.shape + (1,) * (x.dim() - 2)), x, x.new_zeros(()))


def _gather_time(x: Tensor, index: Tensor) -> Tensor:
    return x.gather(0, index[:, :, None].expand_as(x))


def layer(cell: Cell, x: Tensor, lengths: Tensor, h0: Tensor, c0: Optional[Tensor],
          w_ih: Tensor, w_hh: Tensor, b_ih: Optional[Tensor], b_hh: Optional[Tensor],
          w_hr: Optional[Tensor], reverse: bool) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
    """One direction of one layer of `cell` (packedrnn.cells: its step is the math).

    x [T, B, I] with finite padding; lengths [B] int64 on x's device; h0 [B, P]; c0 [B, H] (cells
    with a cell state, else None). Returns output [T, B, P] (zero past each length), h_n [B, P],
    c_n [B, H] (None without a cell state).
    """
    T = x.shape[0]
    if reverse:
        index = reverse_index(lengths, T)
        x = _gather_time(x, index)
    gx = F.linear(x, w_ih, b_ih)  # all steps at once
    h, c = h0, c0
    outputs = []
    steps = int(lengths.max()) if lengths.numel() else 0  # a host sync: fine for the reference
    for s in range(steps):
        active = (lengths > s)[:, None]
        h_new, c_new = cell.step(gx[s], F.linear(h, w_hh, b_hh), h, c)
        if w_hr is not None:
            h_new = F.linear(h_new, w_hr)
        if c is not None:
            c = torch.where(active, c_new, c)
        h = torch.where(active, h_new, h)
        outputs.append(torch.where(active, h_new, torch.zeros_like(h_new)))
    out = h0.new_zeros((T,) + h0.shape)
    if outputs:
        out = torch.cat([torch.stack(outputs), out[steps:]])
    if reverse:
        out = _gather_time(out, index)
    return out, h, c
