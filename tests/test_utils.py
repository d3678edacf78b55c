"""packedrnn.utils: batching, masks, masked loss."""

import pytest
import torch
import torch.nn.functional as F

from packedrnn import PackedRNNError
from packedrnn.utils import masked_cross_entropy, pad_sequences, sequence_mask


def test_pad_sequences_and_mask():
    seqs = [torch.ones(3, 2), torch.ones(0, 2), torch.ones(5, 2)]
    padded, lengths = pad_sequences(seqs, padding_value=-1.0)
    assert padded.shape == (3, 5, 2) and lengths.tolist() == [3, 0, 5]
    mask = sequence_mask(lengths, 5)
    assert mask.tolist() == [[True] * 3 + [False] * 2, [False] * 5, [True] * 5]
    assert torch.equal(padded[~mask], torch.full((2 + 5, 2), -1.0))
    assert sequence_mask(lengths, 5, batch_first=False).shape == (5, 3)
    time_major, _ = pad_sequences(seqs, batch_first=False)
    assert time_major.shape == (5, 3, 2)
    with pytest.raises(PackedRNNError):
        pad_sequences([])


def test_masked_cross_entropy_counts_real_steps_only():
    torch.manual_seed(0)
    logits = torch.randn(3, 4, 5, dtype=torch.float64)
    targets = torch.randint(0, 5, (3, 4))
    lengths = [4, 1, 0]
    logits[1, 1:] = float("nan")  # padding may hold anything
    targets[1, 1:] = -7
    want_sum = F.cross_entropy(logits[0], targets[0], reduction="sum") + \
        F.cross_entropy(logits[1, :1], targets[1, :1], reduction="sum")
    assert torch.allclose(masked_cross_entropy(logits, targets, lengths, reduction="sum"), want_sum)
    assert torch.allclose(masked_cross_entropy(logits, targets, lengths), want_sum / 5)
    assert torch.allclose(masked_cross_entropy(logits, targets, lengths, normalizer=10), want_sum / 10)
    per_step = masked_cross_entropy(logits, targets, lengths, reduction="none")
    assert per_step.shape == (3, 4) and torch.equal(per_step[2], torch.zeros(4, dtype=torch.float64))
    logits.requires_grad_(True)
    masked_cross_entropy(logits, targets, lengths).backward()
    assert torch.isfinite(logits.grad).all() and torch.equal(logits.grad[2], torch.zeros(4, 5, dtype=torch.float64))
    tm = masked_cross_entropy(logits.detach().transpose(0, 1), targets.t(), lengths, batch_first=False)
    assert torch.allclose(tm, want_sum / 5)
    with pytest.raises(PackedRNNError, match="reduction"):
        masked_cross_entropy(logits, targets, lengths, reduction="avg")
    with pytest.raises(PackedRNNError, match=r"lengths\[0\] = 9 exceeds T = 4"):
        masked_cross_entropy(logits, targets, [9, 1, 0])
