"""A small forward + backward on CUDA for compute-sanitizer (scripts/gpu_check.sh): the persistent
kernels (LSTM, GRU; both exchanges; both backward forms; a projection; staging by bulk copies and by
cp.async) and the per-step kernels (a projection; cuBLAS products, per direction or batched), with zero
and full lengths; every other case with the lengths passed to the op on the CPU (PACKEDRNN_TOKENS=1:
gx, saved and the gate gradients over the valid rows only, the cuBLAS products' rows in slots)."""
import os

import torch

import packedrnn

os.environ["PACKEDRNN_BACKEND"] = "cuda"
for i, (cell, kw, xch, persistent, bwd, stage) in enumerate((
        ("LSTM", {}, "tagged", "1", "staged", "cp.async"), ("LSTM", {}, "barrier", "1", "reduce", ""),
        ("LSTM", {"proj_size": 6}, "", "force", "", ""), ("LSTM", {"proj_size": 6}, "", "0", "", ""),
        ("GRU", {}, "tagged", "1", "reduce", ""), ("GRU", {}, "barrier", "1", "staged", "cp.async"),
        ("LSTM", {"proj_size": 8}, "", "force", "", "cp.async"), ("GRU", {}, "barrier", "force", "staged", ""),
        ("LSTM", {}, "", "gemm", "", ""), ("GRU", {}, "", "gemm", "", ""),
        ("LSTM", {"proj_size": 6}, "", "gemm batched", "", ""), ("GRU", {}, "", "gemm batched", "", ""))):
    os.environ["PACKEDRNN_XCH"] = xch  # how the persistent forward passes h between blocks
    os.environ["PACKEDRNN_STAGE"] = stage  # cp.async: sm_80's staging (bulk copies on sm_90 otherwise)
    os.environ["PACKEDRNN_PERSISTENT"], _, os.environ["PACKEDRNN_STEP_GEMM"] = persistent.partition(" ")
    os.environ["PACKEDRNN_BWD"] = bwd  # the backward's two forms
    os.environ["PACKEDRNN_TOKENS"] = "1" if i % 2 else "0"
    cls = packedrnn.PackedLSTM if cell == "LSTM" else packedrnn.PackedGRU
    m = cls(5, 12, num_layers=2, bidirectional=True, batch_first=True, device="cuda", **kw)
    x = torch.randn(5, 7, 5, device="cuda", requires_grad=True)
    out, _ = m(x, lengths=[7, 0, 3, 7, 1])
    out.sum().backward()
torch.cuda.synchronize()
print("sanitize case ran")
