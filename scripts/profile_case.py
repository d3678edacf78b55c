"""One persistent forward kernel for Nsight Compute (scripts/gpu_check.sh, stage `ncu`): LSTM,
H=512, fp32, B=64, every row T=50 long, h exchanged after a grid barrier; as by default (bulk
copies, two rows of W_hh per thread in the product), then staged by cp.async (PACKEDRNN_STAGE=
cp.async), then with one row per thread (PACKEDRNN_TILE=1). ncu profiles the three launches, so
their stall reasons and L2 traffic sit side by side: where the staging of h_{t-1} and the product
(RESULTS.md: ~5 and ~7 us of a ~20 us step at this size) spend their time."""
import os

import torch

import packedrnn

os.environ.update(PACKEDRNN_BACKEND="cuda", PACKEDRNN_PERSISTENT="force", PACKEDRNN_XCH="barrier")
torch.manual_seed(0)
m = packedrnn.PackedLSTM(512, 512, batch_first=True, device="cuda")
x = torch.randn(64, 50, 512, device="cuda")
lengths = torch.full((64,), 50, device="cuda")
with torch.no_grad():
    for stage, tile in (("", ""), ("cp.async", ""), ("", "1")):
        os.environ.update(PACKEDRNN_STAGE=stage, PACKEDRNN_TILE=tile)
        m(x, lengths=lengths)
torch.cuda.synchronize()
print("profile case ran")
