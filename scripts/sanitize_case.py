"""A small forward + backward on CUDA for compute-sanitizer (scripts/gpu_check.sh): the persistent
kernels (LSTM, GRU; the three exchanges; both backward forms; a projection; staging by bulk copies) and
the per-step kernels (a projection), with zero and full lengths."""
import os

import torch

import packedrnn

os.environ["PACKEDRNN_BACKEND"] = "cuda"
for cell, kw, xch, persistent, bwd, stage in (
        ("LSTM", {}, "tagged", "1", "staged", ""), ("LSTM", {}, "barrier", "1", "reduce", ""),
        ("LSTM", {"proj_size": 6}, "", "force", "", ""), ("LSTM", {"proj_size": 6}, "", "0", "", ""),
        ("GRU", {}, "tagged", "1", "reduce", ""), ("GRU", {}, "barrier", "1", "staged", ""),
        ("LSTM", {"proj_size": 8}, "", "force", "", "bulk"), ("GRU", {}, "barrier", "force", "staged", "bulk"),
        ("LSTM", {}, "cluster", "force", "", ""), ("GRU", {}, "cluster_async", "force", "", "")):
    os.environ["PACKEDRNN_XCH"] = xch  # how the persistent forward passes h between blocks (cluster: sm_90)
    os.environ["PACKEDRNN_STAGE"] = stage  # bulk: staging by bulk copies (sm_90 and later)
    os.environ["PACKEDRNN_PERSISTENT"] = persistent
    os.environ["PACKEDRNN_BWD"] = bwd  # the backward's two forms
    cls = packedrnn.PackedLSTM if cell == "LSTM" else packedrnn.PackedGRU
    m = cls(5, 12, num_layers=2, bidirectional=True, batch_first=True, device="cuda", **kw)
    x = torch.randn(5, 7, 5, device="cuda", requires_grad=True)
    out, _ = m(x, lengths=[7, 0, 3, 7, 1])
    out.sum().backward()
torch.cuda.synchronize()
print("sanitize case ran")
