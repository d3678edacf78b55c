"""A small forward + backward on CUDA for compute-sanitizer (scripts/gpu_check.sh): the persistent
kernels (LSTM, GRU) and the per-step kernels (projection), with zero and full lengths."""
import os

import torch

import packedrnn

os.environ["PACKEDRNN_BACKEND"] = "cuda"
for cell, kw in (("LSTM", {}), ("LSTM", {"proj_size": 6}), ("GRU", {})):
    cls = packedrnn.PackedLSTM if cell == "LSTM" else packedrnn.PackedGRU
    m = cls(5, 12, num_layers=2, bidirectional=True, batch_first=True, device="cuda", **kw)
    x = torch.randn(5, 7, 5, device="cuda", requires_grad=True)
    out, _ = m(x, lengths=[7, 0, 3, 7, 1])
    out.sum().backward()
torch.cuda.synchronize()
print("sanitize case ran")
