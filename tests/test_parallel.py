"""Data parallelism: batch-split invariance, DataParallel-style scatter/gather, DDP in 2 processes."""

import os
import signal
import subprocess
import sys

import pytest
import torch
from torch import nn

import packedrnn
from helpers import make_pair, random_inputs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(module, x, hx, lengths):
    out, state = module(x, hx, lengths=lengths)
    return out, list(state) if isinstance(state, tuple) else [state]


@pytest.mark.parametrize("cell,kw", [("LSTM", {}), ("LSTM", {"proj_size": 3}), ("GRU", {})])
def test_batch_split_invariance(cell, kw, device):
    """Chunks along the batch, run apart and concatenated, give the whole-batch result."""
    ours, _ = make_pair(cell, 5, 6, num_layers=2, bidirectional=True, batch_first=True, device=device, **kw)
    lengths = torch.tensor([7, 0, 3, 7, 1, 5, 2, 6])
    x, hx = random_inputs(ours, lengths.tolist(), 7, with_hx=True)
    whole_out, whole_states = _run(ours, x, hx, lengths)
    outs, states = [], []
    for rows in (slice(0, 3), slice(3, 4), slice(4, 8)):
        part_hx = tuple(h[:, rows] for h in hx) if isinstance(hx, tuple) else hx[:, rows]
        o, s = _run(ours, x[rows], part_hx, lengths[rows])
        outs.append(o)
        states.append(s)
    # The time dimension stays T in every chunk: no total_length trick is needed to concatenate.
    torch.testing.assert_close(torch.cat(outs), whole_out, rtol=0, atol=1e-12)
    for i, whole in enumerate(whole_states):
        torch.testing.assert_close(torch.cat([s[i] for s in states], dim=1), whole, rtol=0, atol=1e-12)


def test_dataparallel_scatter_gather_simulated(device):
    """What nn.DataParallel does with (input, lengths=tensor): scatter both along dim 0, run the
    replicas, gather along dim 0. A PackedSequence cannot take this path; padded input can."""
    ours, _ = make_pair("LSTM", 4, 5, bidirectional=True, batch_first=True, device=device)
    lengths = torch.tensor([5, 2, 0, 4, 3])
    x, _ = random_inputs(ours, lengths.tolist(), 5, with_hx=False)
    scattered = list(zip(x.chunk(2, dim=0), lengths.chunk(2, dim=0)))
    gathered = torch.cat([ours(xi, lengths=li)[0] for xi, li in scattered], dim=0)
    torch.testing.assert_close(gathered, ours(x, lengths=lengths)[0], rtol=0, atol=1e-12)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs")
def test_dataparallel_on_two_gpus():
    torch.manual_seed(0)
    model = packedrnn.PackedLSTM(4, 8, num_layers=2, bidirectional=True, batch_first=True).cuda()
    x = torch.randn(6, 9, 4, device="cuda")
    lengths = torch.tensor([9, 3, 0, 5, 9, 1])

    class Wrapper(nn.Module):  # returns only batch-first tensors, which DataParallel gathers on dim 0
        def __init__(self, rnn):
            super().__init__()
            self.rnn = rnn

        def forward(self, x, lengths):
            return self.rnn(x, lengths=lengths)[0]

    out = nn.DataParallel(Wrapper(model))(x, lengths)
    torch.testing.assert_close(out, model(x, lengths=lengths)[0], rtol=0, atol=1e-5)


def test_ddp_two_processes_equal_one_process():
    """examples/ddp_train.py --check: 2 gloo processes on the CPU, started here, bounded in time;
    the parameters after every step equal a single-process run on the whole batch (fp64, 1e-10)."""
    env = dict(os.environ, GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           os.path.join(ROOT, "examples", "ddp_train.py"), "--check", "--steps", "4"]
    # Its own session, so that a hang kills the launcher *and* its workers (not orphans).
    run = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                           cwd=ROOT, start_new_session=True)
    try:
        stdout, stderr = run.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(run.pid, signal.SIGKILL)
        stdout, stderr = run.communicate()
        pytest.fail("torchrun did not finish in 120 s:\n" + stdout[-3000:] + stderr[-3000:])
    assert run.returncode == 0, stdout[-3000:] + stderr[-3000:]
    assert "check passed" in stdout
    assert stdout.count("max parameter difference") == 4
