"""Pure-PyTorch reference: the executable spec of one variable-length RNN layer.

Runs on any device and is differentiable to any order (double backward works here, not through the
compiled ops). It is also the fallback when the compiled extension is unavailable.

Shape legend (time-major, as the ops see it):
  T  padded sequence length          B  batch size            I  input features
  H  hidden units                    P  recurrent state size: proj_size if > 0, else H
  G  gate rows: 4H for LSTM, 3H for GRU

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


def lstm_cell(gates: Tensor, c: Tensor, w_hr: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
    """gates [B, 4H] pre-activations (i, f, g, o as nn.LSTM), c [B, H] -> (h [B, P], c [B, H])."""
    i, f, g, o = gates.chunk(4, dim=-1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h = torch.sigmoid(o) * torch.tanh(c)
    if w_hr is not None:
        h = F.linear(h, w_hr)
    return h, c


def gru_cell(gx: Tensor, gh: Tensor, h: Tensor) -> Tensor:
    """gx = x W_ih^T + b_ih, gh = h W_hh^T + b_hh, both [B, 3H] (r, z, n as nn.GRU) -> h' [B, H]."""
    xr, xz, xn = gx.chunk(3, dim=-1)
    hr, hz, hn = gh.chunk(3, dim=-1)
    r = torch.sigmoid(xr + hr)
    z = torch.sigmoid(xz + hz)
    n = torch.tanh(xn + r * hn)
    return (1 - z) * n + z * h


def reverse_index(lengths: Tensor, T: int) -> Tensor:
    """[T, B] time index that reverses each row's valid prefix and leaves its padding in place.

    It is its own inverse, so the same gather maps inputs into reversed order and outputs back.
    """
    t = torch.arange(T, device=lengths.device)[:, None]
    return torch.where(t < lengths[None, :], lengths[None, :] - 1 - t, t)


def _gather_time(x: Tensor, index: Tensor) -> Tensor:
    return x.gather(0, index[:, :, None].expand_as(x))


def layer(cell: str, x: Tensor, lengths: Tensor, h0: Tensor, c0: Optional[Tensor],
          w_ih: Tensor, w_hh: Tensor, b_ih: Optional[Tensor], b_hh: Optional[Tensor],
          w_hr: Optional[Tensor], reverse: bool) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
    """One direction of one layer.

    x [T, B, I] with finite padding; lengths [B] int64 on x's device; h0 [B, P]; c0 [B, H] (LSTM).
    Returns output [T, B, P] (zero past each length), h_n [B, P], c_n [B, H] (None for GRU).
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
        gh = F.linear(h, w_hh, b_hh)
        if cell == "LSTM":
            h_new, c_new = lstm_cell(gx[s] + gh, c, w_hr)
            c = torch.where(active, c_new, c)
        else:
            h_new = gru_cell(gx[s], gh, h)
        h = torch.where(active, h_new, h)
        outputs.append(torch.where(active, h_new, torch.zeros_like(h_new)))
    out = h0.new_zeros((T,) + h0.shape)
    if outputs:
        out = torch.cat([torch.stack(outputs), out[steps:]])
    if reverse:
        out = _gather_time(out, index)
    return out, h, c
