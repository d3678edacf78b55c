"""PackedLSTM/PackedGRU/PackedRNN as drop-in modules: parameters, state_dict, init, save/load, dropout."""

import io

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from packedrnn import PackedGRU, PackedLSTM, PackedRNN
from helpers import make_pair

PAIRS = [(PackedLSTM, nn.LSTM, {}), (PackedLSTM, nn.LSTM, {"proj_size": 3}), (PackedGRU, nn.GRU, {}),
         (PackedRNN, nn.RNN, {}), (PackedRNN, nn.RNN, {"nonlinearity": "relu"})]


@pytest.mark.parametrize("ours,theirs,kw", PAIRS)
def test_same_parameters_init_and_repr(ours, theirs, kw):
    args = (5, 6, 2, False, True, 0.0, True)  # positional, as nn.LSTM takes them
    if ours is PackedRNN:  # nn.RNN's fourth is the nonlinearity
        args = args[:3] + (kw.get("nonlinearity", "tanh"),) + args[3:]
        kw = {}
    torch.manual_seed(3)
    a = ours(*args, **kw)
    torch.manual_seed(3)
    b = theirs(*args, **kw)
    assert [n for n, _ in a.named_parameters()] == [n for n, _ in b.named_parameters()]
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(p, q), n  # same shapes and the same init from the same seed
    assert repr(a).split("(", 1)[1] == repr(b).split("(", 1)[1]
    assert a.mode == b.mode and getattr(a, "nonlinearity", None) == getattr(b, "nonlinearity", None)
    assert [[t.shape for t in ws] for ws in a.all_weights] == [[t.shape for t in ws] for ws in b.all_weights]
    a.flatten_parameters()


@pytest.mark.parametrize("ours,theirs,kw", PAIRS)
def test_state_dict_loads_both_ways(ours, theirs, kw):
    a, b = ours(4, 6, 2, bidirectional=True, **kw), theirs(4, 6, 2, bidirectional=True, **kw)
    a.load_state_dict(b.state_dict())
    for k, v in b.state_dict().items():
        assert torch.equal(a.state_dict()[k], v)
    b2 = theirs(4, 6, 2, bidirectional=True, **kw)
    b2.load_state_dict(ours(4, 6, 2, bidirectional=True, **kw).state_dict())


def test_save_and_load_whole_module():
    m = PackedLSTM(3, 4, num_layers=2, batch_first=True)
    buf = io.BytesIO()
    torch.save(m, buf)
    buf.seek(0)
    m2 = torch.load(buf, weights_only=False)
    x = torch.randn(2, 5, 3)
    assert torch.equal(m(x, lengths=[5, 2])[0], m2(x, lengths=[5, 2])[0])


def test_weight_norm_and_parametrize_apply_at_call_time():
    ours, theirs = make_pair("LSTM", 3, 4, num_layers=1)
    for m in (ours, theirs):
        nn.utils.parametrizations.weight_norm(m, "weight_hh_l0")
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    o1, _ = ours(x)
    o2, _ = theirs(x)
    torch.testing.assert_close(o1, o2, rtol=0, atol=1e-10)

    class Double(nn.Module):
        def forward(self, w):
            return 2 * w

    ours2, _ = make_pair("GRU", 3, 4)
    before = ours2(x)[0]
    parametrize.register_parametrization(ours2, "weight_ih_l0", Double())
    after = ours2(x)[0]
    manual = make_pair("GRU", 3, 4)[0]
    manual.load_state_dict({k.replace(".original", "").replace("parametrizations.", ""): v
                            for k, v in ours2.state_dict().items()})
    with torch.no_grad():
        manual.weight_ih_l0.mul_(2)
    assert not torch.equal(before, after)
    torch.testing.assert_close(after, manual(x)[0], rtol=0, atol=1e-12)


@pytest.mark.parametrize("cls", [PackedLSTM, PackedGRU])
def test_dropout_only_in_training(cls):
    torch.manual_seed(0)
    m = cls(3, 8, num_layers=3, dropout=0.5, dtype=torch.float64)
    x = torch.randn(6, 4, 3, dtype=torch.float64)
    lengths = [6, 2, 5, 0]
    m.eval()
    e1, e2 = m(x, lengths=lengths)[0], m(x, lengths=lengths)[0]
    assert torch.equal(e1, e2)  # eval: deterministic
    m.train()
    t1, t2 = m(x, lengths=lengths)[0], m(x, lengths=lengths)[0]
    assert not torch.equal(t1, t2) and not torch.equal(t1, e1)  # train: random masks
    for out in (t1, t2):
        for b, n in enumerate(lengths):
            assert torch.equal(out[n:, b], torch.zeros_like(out[n:, b]))
    # The last layer's output is never dropped: dropout 0 in training equals eval.
    m.dropout = 0.0
    assert torch.equal(m(x, lengths=lengths)[0], e1)


def test_dropout_warning_single_layer():
    with pytest.warns(UserWarning, match="dropout option adds dropout"):
        PackedLSTM(3, 4, dropout=0.2)
