"""One persistent forward kernel for Nsight Compute (scripts/gpu_check.sh, stage `ncu`): LSTM,
H=512, fp32, B=64, every row T=50 long, h exchanged after a grid barrier, staged as the device does
by default (bulk copies on sm_90). ncu profiles the launch: stall reasons and L2 traffic, i.e. where
the staging of h_{t-1} and the product (RESULTS.md: ~5 and ~7 us of a ~18 us step at this size)
spend their time."""
import torch

import packedrnn

torch.manual_seed(0)
m = packedrnn.PackedLSTM(512, 512, batch_first=True, device="cuda")
x = torch.randn(64, 50, 512, device="cuda")
lengths = torch.full((64,), 50, device="cuda")
with torch.no_grad(), packedrnn.tuning(backend="cuda", recurrence="persistent:barrier"):
    m(x, lengths=lengths)
torch.cuda.synchronize()
print("profile case ran")
