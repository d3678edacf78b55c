"""One persistent forward kernel for Nsight Compute (scripts/gpu_check.sh, stage `ncu`): LSTM,
H=512, fp32, B=64, every row T=50 long, h exchanged after a grid barrier; staged by bulk copies (the
sm_90 default), then by cp.async (PACKEDRNN_STAGE=cp.async). ncu profiles the two launches, so their
stall reasons and L2 traffic sit side by side: where the staging of h_{t-1} and the product
(RESULTS.md: ~5 and ~7 us of a ~18 us step at this size) spend their time."""
import os

import torch

import packedrnn

os.environ.update(PACKEDRNN_BACKEND="cuda", PACKEDRNN_PERSISTENT="force", PACKEDRNN_XCH="barrier")
torch.manual_seed(0)
m = packedrnn.PackedLSTM(512, 512, batch_first=True, device="cuda")
x = torch.randn(64, 50, 512, device="cuda")
lengths = torch.full((64,), 50, device="cuda")
with torch.no_grad():
    for stage in ("", "cp.async"):
        os.environ["PACKEDRNN_STAGE"] = stage
        m(x, lengths=lengths)
torch.cuda.synchronize()
print("profile case ran")
