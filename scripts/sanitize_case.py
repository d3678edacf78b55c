"""A small forward + backward on CUDA for compute-sanitizer (scripts/gpu_check.sh): the persistent
kernels (LSTM, GRU; both exchanges) and the per-step kernels (projection), with zero and full
lengths."""
import os

import torch

import packedrnn

os.environ["PACKEDRNN_BACKEND"] = "cuda"
for cell, kw, xch in (("LSTM", {}, "tagged"), ("LSTM", {}, "barrier"), ("LSTM", {"proj_size": 6}, ""),
                      ("GRU", {}, "tagged"), ("GRU", {}, "barrier")):
    os.environ["PACKEDRNN_XCH"] = xch  # the two ways the persistent forward passes h between blocks
    cls = packedrnn.PackedLSTM if cell == "LSTM" else packedrnn.PackedGRU
    m = cls(5, 12, num_layers=2, bidirectional=True, batch_first=True, device="cuda", **kw)
    x = torch.randn(5, 7, 5, device="cuda", requires_grad=True)
    out, _ = m(x, lengths=[7, 0, 3, 7, 1])
    out.sum().backward()
torch.cuda.synchronize()
print("sanitize case ran")
