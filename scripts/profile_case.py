"""One persistent forward kernel for Nsight Compute (scripts/gpu_check.sh, stage `ncu`): LSTM,
H=512, fp32, B=64, every row T=50 long, h exchanged after a grid barrier; staged by cp.async, then
by bulk copies (PACKEDRNN_STAGE=bulk), then by cp.async with two rows of W_hh per thread in the
product (PACKEDRNN_TILE=2). ncu profiles the three launches, so their stall reasons and L2 traffic
sit side by side: where the staging of h_{t-1} and the product (RESULTS.md: ~6 and ~8 us of a
~19 us step at this size) spend their time."""
import os

import torch

import packedrnn

os.environ.update(PACKEDRNN_BACKEND="cuda", PACKEDRNN_PERSISTENT="force", PACKEDRNN_XCH="barrier")
torch.manual_seed(0)
m = packedrnn.PackedLSTM(512, 512, batch_first=True, device="cuda")
x = torch.randn(64, 50, 512, device="cuda")
lengths = torch.full((64,), 50, device="cuda")
with torch.no_grad():
    for stage, tile in (("", ""), ("bulk", ""), ("", "2")):
        os.environ.update(PACKEDRNN_STAGE=stage, PACKEDRNN_TILE=tile)
        m(x, lengths=lengths)
torch.cuda.synchronize()
print("profile case ran")
