"""torch.autograd.gradcheck in float64 on small shapes."""

import pytest
import torch

import packedrnn

CASES = {
    "lstm": ("LSTM", dict(num_layers=2)),
    "lstm_proj": ("LSTM", dict(num_layers=2, proj_size=2)),
    "gru": ("GRU", dict(num_layers=2)),
    "lstm_bidirectional": ("LSTM", dict(bidirectional=True)),
    "gru_bidirectional": ("GRU", dict(bidirectional=True, bias=False)),
    "rnn_tanh": ("RNN_TANH", dict(num_layers=2)),
    "rnn_relu_bidirectional": ("RNN_RELU", dict(bidirectional=True)),
}


@pytest.mark.parametrize("name", CASES)
def test_gradcheck(name, device):
    cell, kw = CASES[name]
    torch.manual_seed(0)
    if cell.startswith("RNN_"):
        cls, kw = packedrnn.PackedRNN, dict(kw, nonlinearity=cell[4:].lower())
    else:
        cls = packedrnn.PackedLSTM if cell == "LSTM" else packedrnn.PackedGRU
    m = cls(2, 3, batch_first=True, dtype=torch.float64, device=device, **kw)
    names = [n for n, _ in m.named_parameters()]
    params = [p.detach().clone().requires_grad_(True) for p in m.parameters()]
    lengths = torch.tensor([3, 0, 4, 1])
    D = 2 if m.bidirectional else 1
    P = m.proj_size or m.hidden_size
    x = torch.randn(4, 4, 2, dtype=torch.float64, device=device, requires_grad=True)
    h0 = torch.randn(m.num_layers * D, 4, P, dtype=torch.float64, device=device, requires_grad=True)
    c0 = torch.randn(m.num_layers * D, 4, 3, dtype=torch.float64, device=device, requires_grad=True)

    def f(x, h0, c0, *ps):
        hx = (h0, c0) if cell == "LSTM" else h0
        out, state = torch.func.functional_call(m, dict(zip(names, ps)), (x, hx),
                                                {"lengths": lengths})
        states = state if cell == "LSTM" else (state,)
        return (out,) + tuple(states)

    assert torch.autograd.gradcheck(f, (x, h0, c0, *params), atol=1e-7)
