"""packedrnn.convert: every nn.LSTM/GRU/RNN in a model replaced, same weights, code unchanged."""

import copy

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import packedrnn
from helpers import assert_same_results_and_grads


class Tagger(nn.Module):
    """A model that packs before calling its recurrent modules, as code written for nn.LSTM does."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(3, 6)
        self.encoder = nn.Sequential(nn.LSTM(6, 5, num_layers=2, bidirectional=True, batch_first=True))
        self.blocks = nn.ModuleDict({"gru": nn.GRU(10, 4, batch_first=True),
                                     "rnn": nn.RNN(4, 3, nonlinearity="relu", batch_first=True, bias=False)})
        self.head = nn.Linear(3, 2)

    def forward(self, x, lengths):
        packed = pack_padded_sequence(self.embed(x), lengths, batch_first=True, enforce_sorted=False)
        packed, (h, c) = self.encoder[0](packed)
        packed, _ = self.blocks["gru"](packed)
        out, _ = pad_packed_sequence(packed, batch_first=True, total_length=x.shape[1])
        out, h_n = self.blocks["rnn"](out)  # padded, no lengths: every row runs to T
        return self.head(out), h, c, h_n


def test_convert_nested_model_same_results_and_weights():
    torch.manual_seed(0)
    model = Tagger().double().eval()
    reference = copy.deepcopy(model)
    params_before = dict(model.named_parameters())
    converted = packedrnn.convert(model)
    assert converted is model
    assert isinstance(model.encoder[0], packedrnn.PackedLSTM)
    assert isinstance(model.blocks["gru"], packedrnn.PackedGRU)
    assert isinstance(model.blocks["rnn"], packedrnn.PackedRNN) and model.blocks["rnn"].nonlinearity == "relu"
    assert not model.training and not model.encoder[0].training
    for name, p in model.named_parameters():
        assert p is params_before[name]  # the same Parameters: optimizers keep working
    assert list(model.state_dict()) == list(reference.state_dict())

    x = torch.randn(4, 7, 3, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([7, 2, 5, 7])
    assert_same_results_and_grads(model(x, lengths), reference(x, lengths), [x, *model.parameters()],
                                  [x, *reference.parameters()], atol=1e-10)


def test_convert_a_module_itself_and_its_call_forms():
    torch.manual_seed(1)
    lstm = nn.LSTM(3, 4, proj_size=2, batch_first=True).train()
    ours = packedrnn.convert(lstm)
    assert isinstance(ours, packedrnn.PackedLSTM) and ours.training and ours.proj_size == 2
    x = torch.randn(3, 6, 3)
    lengths = [6, 1, 4]
    hx = (torch.zeros(1, 3, 2), torch.zeros(1, 3, 4))
    by_keyword = ours(x, hx, lengths=lengths)
    by_position = ours(x, hx, lengths)  # m(x, hx, lengths), as many wrappers call it
    torch.testing.assert_close(by_position, by_keyword, rtol=0, atol=0)
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    out, _ = pad_packed_sequence(lstm(packed, hx)[0], batch_first=True, total_length=6)
    torch.testing.assert_close(by_keyword[0], out, rtol=0, atol=1e-6)


def test_convert_keeps_dtype_and_leaves_other_modules():
    model = nn.Sequential(nn.Linear(2, 3), nn.GRU(3, 3).to(torch.float64), nn.LSTMCell(3, 3))
    packedrnn.convert(model)
    assert isinstance(model[1], packedrnn.PackedGRU) and model[1].weight_ih_l0.dtype == torch.float64
    assert type(model[0]) is nn.Linear and type(model[2]) is nn.LSTMCell


def test_convert_after_dynamic_quantization_keeps_the_quantized_layers():
    """The README's recipe for int8 recurrent layers: quantize first, then convert the rest."""
    import warnings
    model = nn.Sequential(nn.LSTM(3, 4), nn.GRU(4, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notices
        model = torch.ao.quantization.quantize_dynamic(model, {nn.LSTM})
    packedrnn.convert(model)
    assert "quantized" in type(model[0]).__module__ and isinstance(model[1], packedrnn.PackedGRU)
