"""Every bad argument gets a PackedRNNError naming the argument and the value, before any work."""

import re

import numpy
import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from packedrnn import PackedGRU, PackedLSTM, PackedRNN, PackedRNNError


@pytest.fixture
def lstm():
    return PackedLSTM(3, 4, num_layers=2, batch_first=True)


X = torch.randn(4, 10, 3)


@pytest.mark.parametrize("lengths,message", [
    (torch.tensor([[1, 2], [3, 4]]), "lengths must be 1-D, got a 2-D tensor of shape (2, 2)"),
    (torch.tensor([1.0, 2.5, 3.0, 4.0]), "lengths[1] = 2.5 is not an integer"),
    (numpy.array([1.0, 2.0, float("nan"), 4.0]), "lengths[2] = nan is not an integer"),
    (torch.tensor([1, 2, 3, 4], dtype=torch.float32, device="meta"),
     "lengths must have an integer dtype, got torch.float32 on meta"),
    (torch.tensor([True, True, False, True]), "lengths must have an integer dtype, got torch.bool"),
    ([1, 2, 3, 4, 5], "len(lengths)=5 but batch size is 4"),
    (torch.tensor([1, 2, 3]), "len(lengths)=3 but batch size is 4"),
    ([1, 2, 3, 12], "lengths[3] = 12 exceeds T = 10"),
    (torch.tensor([1, -1, 3, 4]), "lengths[1] = -1 is negative"),
    ([1, 2.5, 3, 4], "lengths[1] = 2.5 is not an integer"),
    ([1, torch.tensor(True), 3, 4], "lengths[1] = tensor(True) is not an integer"),
    (numpy.array([[1, 2], [3, 4]]), "lengths must be 1-D, got a 2-D array of shape (2, 2)"),
    ("1234", "lengths must be a sequence of ints (list, tuple, numpy array) or a 1-D integer tensor, got str"),
])
def test_bad_lengths(lstm, lengths, message):
    with pytest.raises(PackedRNNError, match=re.escape(message)):
        lstm(X, lengths=lengths)


@pytest.mark.parametrize("lengths", [
    numpy.array([10, 2, 0, 7]), numpy.array([10, 2, 0, 7], dtype=numpy.int32), (10, 2, 0, 7),
    [numpy.int64(10), torch.tensor(2), numpy.array(0), 7], numpy.array([10.0, 2.0, 0.0, 7.0]),
    torch.tensor([10.0, 2.0, 0.0, 7.0]), [10.0, 2, 0, 7],
])
def test_lengths_as_data_loaders_give_them(lstm, lengths):
    """What data loaders hand over (numpy arrays, tuples, 0-d tensors per row, integral floats)
    means what the list of ints means."""
    expected = lstm(X, lengths=[10, 2, 0, 7])
    got = lstm(X, lengths=lengths)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_error_class_is_value_and_runtime_error(lstm):
    for cls in (ValueError, RuntimeError):
        with pytest.raises(cls):
            lstm(X, lengths=[1, 2, 3, 12])


@pytest.mark.parametrize("x,message", [
    (torch.randn(2, 4, 10, 3), "input must be 2-D (unbatched) or 3-D (batched), got a 4-D tensor"),
    (torch.randn(4, 10, 5), "input.size(-1) must be equal to input_size: expected 3, got 5"),
    (torch.randn(4, 10, 3).double(), "RNN input dtype (torch.float64) does not match weight dtype (torch.float32) of weight_ih_l0"),
    (torch.ones(4, 10, 3, dtype=torch.int64), "input must be a floating-point tensor"),
    ([[1.0]], "input must be a Tensor or a PackedSequence, got list"),
])
def test_bad_input(lstm, x, message):
    with pytest.raises(PackedRNNError, match=re.escape(message)):
        lstm(x)


def test_input_on_another_device(lstm):
    with pytest.raises(PackedRNNError, match=re.escape("input is on meta but weight_ih_l0 is on cpu")):
        lstm(torch.empty(4, 10, 3, device="meta"))


@pytest.mark.parametrize("hx,message", [
    ((torch.zeros(2, 3, 4), torch.zeros(2, 4, 4)), "Expected hidden[0] size (2, 4, 4), got [2, 3, 4]: hx[0] (h0) has shape (2, 3, 4)"),
    ((torch.zeros(2, 4, 4), torch.zeros(1, 4, 4)), "Expected hidden[1] size (2, 4, 4), got [1, 4, 4]: hx[1] (c0)"),
    ((torch.zeros(2, 4, 4).double(), torch.zeros(2, 4, 4)), "hx[0] (h0) dtype torch.float64 does not match"),
    (torch.zeros(2, 4, 4), "hx for LSTM must be a tuple (h0, c0), got Tensor"),
])
def test_bad_hx(lstm, hx, message):
    with pytest.raises(PackedRNNError, match=re.escape(message)):
        lstm(X, hx, lengths=[1, 2, 3, 4])


def test_bad_hx_checked_for_packed_input_too(lstm):
    # nn.LSTM skips this check for PackedSequence input (pytorch#195803); we do not.
    packed = pack_padded_sequence(X, [10, 2, 3, 4], batch_first=True, enforce_sorted=False)
    bad = (torch.zeros(2, 3, 4), torch.zeros(2, 3, 4))
    with pytest.raises(PackedRNNError, match=re.escape("Expected hidden[0] size (2, 4, 4), got [2, 3, 4]: hx[0] (h0) has shape (2, 3, 4)")):
        lstm(packed, bad)


def test_gru_hx_shape():
    gru = PackedGRU(3, 4)
    with pytest.raises(PackedRNNError, match=re.escape("Expected hidden size (1, 4, 4), got [1, 2, 4]: hx (h0)")):
        gru(X.transpose(0, 1), torch.zeros(1, 2, 4))


def test_unbatched_arguments(lstm):
    with pytest.raises(PackedRNNError, match="for unbatched 2-D input, lengths must be an int"):
        lstm(torch.randn(10, 3), lengths=[3])
    with pytest.raises(PackedRNNError, match=re.escape("lengths[0] = 11 exceeds T = 10")):
        lstm(torch.randn(10, 3), lengths=11)
    with pytest.raises(PackedRNNError, match=re.escape("hx[0] must be 2-D")):
        lstm(torch.randn(10, 3), (torch.zeros(2, 1, 4), torch.zeros(2, 1, 4)))


@pytest.mark.parametrize("args,kwargs", [
    ((3, 4), dict(dropout=1.5)),
    ((3, 4), dict(dropout=True)),
    ((3, 4), dict(num_layers=0)),
    ((3, 0), {}),
    ((0, 4), {}),
    ((3, 4.0), {}),
    ((3, 4), dict(bias=1)),
    ((3, 4), dict(batch_first="yes")),
    ((3, 4), dict(proj_size=-1)),
    ((3, 4), dict(proj_size=4)),
    ((3, 4), dict(nonlinearity="sigmoid")),
    ((3, 4, 1, "gelu"), {}),
])
@pytest.mark.parametrize("ours,theirs", [(PackedLSTM, nn.LSTM), (PackedGRU, nn.GRU), (PackedRNN, nn.RNN)])
def test_constructor_rejects_as_torch_does(ours, theirs, args, kwargs):
    if ours is not PackedLSTM and "proj_size" in kwargs:
        kwargs = dict(kwargs, proj_size=1)
    with pytest.raises(Exception) as expected:
        theirs(*args, **kwargs)
    with pytest.raises(expected.type):
        ours(*args, **kwargs)


@pytest.mark.parametrize("ours,theirs", [(PackedLSTM, nn.LSTM), (PackedGRU, nn.GRU)])
def test_messages_keep_nn_words(ours, theirs):
    """Code and tests matched against nn's messages keep matching: the same exception types (a
    PackedRNNError is both a ValueError and a RuntimeError) and the same key words."""
    for module in (ours(3, 4), theirs(3, 4)):
        h = torch.zeros(1, 2, 4)
        with pytest.raises(RuntimeError, match=r"Expected hidden(\[0\])? size \(1, 4, 4\), got \[1, 2, 4\]"):
            module(X.transpose(0, 1), (h, h) if isinstance(module, (nn.LSTM, PackedLSTM)) else h)
        with pytest.raises(ValueError, match=r"RNN input dtype \(torch.float64\) does not match weight dtype "
                                              r"\(torch.float32\).*Convert input: input.to\(torch.float32\)"):
            module(X.double())
