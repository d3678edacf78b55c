"""A small forward + backward on CUDA for compute-sanitizer (scripts/gpu_check.sh): the persistent
kernels (LSTM, GRU; both exchanges; both backward forms; a projection) and the per-step kernels (a
projection; cuBLAS products), with zero and full lengths; every other case with the lengths passed
to the op on the CPU (tokens=1: gx, saved and the gate gradients over the valid rows only, the
cuBLAS products' rows in slots). (cp.async's staging, sm_80's, runs on sm_80 devices and in the
emulated tests; sm_90 stages by bulk copies.)"""
import torch

import packedrnn

for i, (cell, kw, recurrence) in enumerate((
        ("LSTM", {}, "persistent:tagged:staged"), ("LSTM", {}, "persistent:barrier:reduce"),
        ("LSTM", {"proj_size": 6}, "persistent"), ("LSTM", {"proj_size": 6}, "step"),
        ("GRU", {}, "persistent:tagged:reduce"), ("GRU", {}, "persistent:barrier:staged"),
        ("LSTM", {"proj_size": 8}, "persistent"), ("GRU", {}, "persistent:barrier:staged"),
        ("LSTM", {}, "gemm"), ("GRU", {}, "gemm"), ("LSTM", {"proj_size": 6}, "gemm"), ("GRU", {}, "step"))):
    cls = packedrnn.PackedLSTM if cell == "LSTM" else packedrnn.PackedGRU
    m = cls(5, 12, num_layers=2, bidirectional=True, batch_first=True, device="cuda", **kw)
    x = torch.randn(5, 7, 5, device="cuda", requires_grad=True)
    with packedrnn.tuning(backend="cuda", recurrence=recurrence, tokens="1" if i % 2 else "0"):
        out, _ = m(x, lengths=[7, 0, 3, 7, 1])
        out.sum().backward()
torch.cuda.synchronize()
print("sanitize case ran")
