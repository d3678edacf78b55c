"""Data-parallel training of a PackedLSTM with DistributedDataParallel.

    torchrun --standalone --nproc_per_node=2 examples/ddp_train.py            # gloo, CPU
    torchrun --standalone --nproc_per_node=2 examples/ddp_train.py --check    # and verify it

Each rank takes its slice of every global batch (padded input and lengths split along the batch
dimension, which a PackedSequence cannot do). The loss is the sum of squared errors over real
steps divided by the *global* count of real steps, times the world size: DDP averages gradients
over ranks, so every rank then optimises exactly the single-process objective. With --check,
rank 0 also trains an identical model on the whole batch without DDP and asserts, after every
step, that the parameters agree to 1e-10 (float64).
"""

import argparse
import gc
import os

import torch
import torch.distributed as dist
from torch import nn

from packedrnn import PackedLSTM
from packedrnn.utils import sequence_mask


class Tagger(nn.Module):
    def __init__(self, features: int, hidden: int, outputs: int):
        super().__init__()
        self.rnn = PackedLSTM(features, hidden, num_layers=2, bidirectional=True, batch_first=True)
        self.head = nn.Linear(2 * hidden, outputs)

    def forward(self, x, lengths):
        out, _ = self.rnn(x, lengths=lengths)
        return self.head(out)


def make_batch(step: int, batch: int, T: int, features: int, outputs: int, dtype):
    """The global batch of `step`: the same on every rank (seeded), variable lengths, zeros too."""
    g = torch.Generator().manual_seed(1000 + step)
    lengths = torch.randint(0, T + 1, (batch,), generator=g)
    lengths[0] = T
    x = torch.randn(batch, T, features, generator=g, dtype=dtype)
    y = torch.randn(batch, T, outputs, generator=g, dtype=dtype)
    return x, lengths, y


def loss_fn(pred, y, lengths, global_count: int, scale: float):
    mask = sequence_mask(lengths, pred.shape[1])
    err = torch.where(mask[..., None], (pred - y) ** 2, pred.new_zeros(()))
    return err.sum() * scale / global_count


def train(args):
    rank, world = dist.get_rank(), dist.get_world_size()
    if args.batch % world:
        raise SystemExit(f"--batch {args.batch} must divide by the world size {world}")
    dtype = torch.float64 if args.check else torch.float32
    features, hidden, outputs = 5, 8, 3

    torch.manual_seed(0)
    model = Tagger(features, hidden, outputs).to(dtype)
    reference = Tagger(features, hidden, outputs).to(dtype)
    reference.load_state_dict(model.state_dict())
    ddp = nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD(ddp.parameters(), lr=args.lr)
    ref_opt = torch.optim.SGD(reference.parameters(), lr=args.lr)
    share = args.batch // world
    mine = slice(rank * share, (rank + 1) * share)

    for step in range(args.steps):
        x, lengths, y = make_batch(step, args.batch, args.T, features, outputs, dtype)
        count = int(lengths.sum()) * outputs  # global: every rank sees the whole batch's lengths
        opt.zero_grad()
        loss = loss_fn(ddp(x[mine], lengths[mine]), y[mine], lengths[mine], count, scale=world)
        loss.backward()
        opt.step()
        # The mean over ranks of `loss` is the global loss.
        total = loss.detach().clone()
        dist.all_reduce(total)
        line = f"step {step}: loss {total.item() / world:.6f}"
        if args.check and rank == 0:
            ref_opt.zero_grad()
            ref_loss = loss_fn(reference(x, lengths), y, lengths, count, scale=1.0)
            ref_loss.backward()
            ref_opt.step()
            diff = max((a - b).abs().max().item() for a, b in zip(model.parameters(), reference.parameters()))
            line += f", single-process loss {ref_loss.item():.6f}, max parameter difference {diff:.2e}"
            assert diff <= 1e-10, f"DDP and single-process parameters differ by {diff:.3g} at step {step}"
        if rank == 0:
            print(line, flush=True)
    if args.check and rank == 0:
        print("check passed: DDP over", world, "ranks equals one process on the whole batch", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--batch", type=int, default=8, help="global batch size")
    p.add_argument("--T", type=int, default=12)
    p.add_argument("--lr", type=float, default=0.5)
    p.add_argument("--check", action="store_true", help="compare with a single-process run (float64)")
    args = p.parse_args()

    dist.init_process_group("gloo")
    train(args)
    # Teardown order matters (torch 2.13, gloo). The DDP module's C++ reducer holds the process
    # group; if it is the last holder, the group's destructor runs on this thread *with* the GIL
    # and joins gloo's worker thread, which may itself be waiting for the GIL to release a tensor
    # of the last collective: a deadlock at exit, seen about once in 30 runs on a loaded 2-core
    # machine. So the model dies first (train() has returned; collect its reference cycles), and
    # destroy_process_group() drops the last reference, through a binding that releases the GIL.
    gc.collect()
    dist.barrier()  # leave together: a rank tearing down gloo while its peer still works can hang
    dist.destroy_process_group()


if __name__ == "__main__":
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # single-machine runs stay on the loopback
    main()
