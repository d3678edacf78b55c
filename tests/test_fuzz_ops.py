"""The compiled ops called directly with random, often wrong, arguments (tests/fuzz_ops.py): a clean
exception or the reference's result, never a crash. The fuzzer runs in a subprocess, so that a
crash fails this test instead of killing the suite; its output, with the falsifying example in a
form that reproduces it, is in the failure message."""

import os
import subprocess
import sys

import pytest
import torch

from helpers import OP_DEVICES
from packedrnn import PackedRNNError

HERE = os.path.dirname(os.path.abspath(__file__))
pytestmark = pytest.mark.skipif(not OP_DEVICES, reason="the compiled ops are not built")


def fuzz(examples: int):
    done = subprocess.run([sys.executable, os.path.join(HERE, "fuzz_ops.py"), str(examples)], capture_output=True,
                          text=True, timeout=3600)
    assert done.returncode == 0, (f"fuzz_ops.py exited with {done.returncode} (a negative code is the signal "
                                  f"that killed it)\n{done.stdout[-6000:]}\n{done.stderr[-6000:]}")


def test_fuzz_ops():
    fuzz(500)


@pytest.mark.slow
def test_fuzz_ops_10000():
    fuzz(10_000)


@pytest.mark.parametrize("values", [[6, 1, 2], [-1, 1, 2], [10**9, 1, 2], [2**63 - 1, 0, 0], [-2**63, 0, 0]])
def test_raw_cpu_op_refuses_bad_lengths(values):
    """No Python layer in front: the op's own check, the Python layer's class and words."""
    T, B, I, H = 5, 3, 4, 6
    lengths = torch.tensor(values)
    tokens = torch.ops.packedrnn.token_index(torch.tensor([5, 1, 2]), T)
    args = (torch.randn(T, B, I), lengths, tokens, None, torch.zeros(1, B, H), torch.zeros(1, B, H),
            torch.randn(1, 4 * H, I), torch.randn(1, 4 * H, H), None, None, None)
    first = next(b for b, v in enumerate(values) if not 0 <= v <= T)
    words = "is negative" if values[first] < 0 else f"exceeds T = {T}"
    message = f"lengths[{first}] = {values[first]} {words}"
    with pytest.raises(PackedRNNError, match=message.replace("[", r"\[").replace("]", r"\]")):
        torch.ops.packedrnn.rnn_layer(0, *args, True, 0)
    with pytest.raises(PackedRNNError, match="lengths"):
        torch.ops.packedrnn.token_index(lengths, T)
    saved = torch.ops.packedrnn.rnn_layer(0, args[0], torch.tensor([5, 1, 2]), *args[2:], True, 0)[3]
    with pytest.raises(PackedRNNError, match=message.replace("[", r"\[").replace("]", r"\]")):
        torch.ops.packedrnn.rnn_layer_backward(0, *args, saved, torch.zeros(T, B, H), torch.zeros(1, B, H),
                                               torch.zeros(1, B, H), 0)
