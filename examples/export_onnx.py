"""Export a PackedLSTM model to ONNX and run it in ONNX Runtime, checked against eager PyTorch.

    pip install onnx onnxscript onnxruntime
    python examples/export_onnx.py [--out tagger.onnx]

The exported graph holds one native ONNX LSTM node per layer with sequence_lens; the batch size
and the time length are dynamic, and the lengths are an input.
"""

import argparse

import numpy as np
import onnx
import onnxruntime
import torch
from torch import nn
from torch.export import Dim

import packedrnn


class Tagger(nn.Module):
    def __init__(self, features=16, hidden=32, tags=5):
        super().__init__()
        self.rnn = packedrnn.PackedLSTM(features, hidden, num_layers=2, bidirectional=True, batch_first=True)
        self.head = nn.Linear(2 * hidden, tags)

    def forward(self, x, lengths):  # x [B, T, features], lengths int64 [B]
        out, _ = self.rnn(x, lengths=lengths)
        return self.head(out)       # [B, T, tags]; zero features past each length


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="tagger.onnx")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = Tagger().eval()
    x, lengths = torch.randn(4, 12, 16), torch.tensor([12, 3, 0, 7])
    torch.onnx.export(model, (x, lengths), args.out, dynamo=True,
                      dynamic_shapes=({0: Dim("batch"), 1: Dim("time")}, {0: Dim("batch")}))
    nodes = [n.op_type for n in onnx.load(args.out).graph.node if n.op_type in ("LSTM", "GRU", "RNN")]
    print(f"wrote {args.out}: recurrent nodes {nodes}")

    session = onnxruntime.InferenceSession(args.out)
    names = [i.name for i in session.get_inputs()]
    x, lengths = torch.randn(6, 30, 16), torch.tensor([30, 1, 17, 0, 25, 9])  # new batch and time sizes
    (got,) = session.run(None, dict(zip(names, (x.numpy(), lengths.numpy()))))
    with torch.no_grad():
        want = model(x, lengths).numpy()
    print(f"ONNX Runtime vs eager on a new batch: largest difference {np.abs(got - want).max():.1e}")


if __name__ == "__main__":
    main()
