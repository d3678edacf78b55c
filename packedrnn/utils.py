"""Helpers for variable-length batches: batching, masks, and losses over real steps only."""

from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .validation import fail, lengths_to_tensor


def pad_sequences(sequences: Sequence[Tensor], batch_first: bool = True,
                  padding_value: float = 0.0) -> Tuple[Tensor, Tensor]:
    """A list of [L_i, *] tensors -> (padded [B, max L, *] (or [max L, B, *]), lengths int64 [B]).

    Zero-length sequences are allowed. The lengths stay on the CPU: they are what the packedrnn
    modules take, and a CPU tensor splits along dim 0 under nn.DataParallel like the batch does.
    """
    if len(sequences) == 0:
        fail("pad_sequences needs at least one sequence")
    lengths = torch.tensor([len(s) for s in sequences], dtype=torch.int64)
    padded = torch.nn.utils.rnn.pad_sequence(list(sequences), batch_first=batch_first,
                                             padding_value=padding_value)
    return padded, lengths


def sequence_mask(lengths, T: int, *, batch_first: bool = True,
                  device: Optional[torch.device] = None) -> Tensor:
    """Bool mask of real steps: [B, T] (or [T, B]) with mask[b, t] = t < lengths[b]. No host sync."""
    lengths = torch.as_tensor(lengths) if not isinstance(lengths, Tensor) else lengths
    if device is not None:
        lengths = lengths.to(device, non_blocking=True)
    mask = torch.arange(T, device=lengths.device)[None, :] < lengths[:, None]
    return mask if batch_first else mask.t()


def masked_cross_entropy(logits: Tensor, targets: Tensor, lengths, *, batch_first: bool = True,
                         reduction: str = "mean", normalizer: Optional[float] = None) -> Tensor:
    """Cross-entropy over real steps only.

    logits [B, T, C] (or [T, B, C]); targets [B, T] (or [T, B]) class indices, anything at padded
    steps; lengths B values. reduction: "mean" (over real steps), "sum", or "none" ([B, T], zero at
    padded steps). `normalizer` replaces the count of real steps in "mean": for data-parallel
    training pass the global count so that every replica optimises the same objective.
    """
    if reduction not in ("mean", "sum", "none"):
        fail(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    T = logits.shape[1] if batch_first else logits.shape[0]
    B = logits.shape[0] if batch_first else logits.shape[1]
    lengths = lengths_to_tensor(lengths, B, T)
    mask = sequence_mask(lengths, T, batch_first=batch_first, device=logits.device)
    # Padded steps may hold anything (NaN included): select, never multiply by the mask, and
    # select the inputs too, or the backward would still meet NaN there.
    safe_targets = torch.where(mask, targets, torch.zeros_like(targets))
    safe_logits = torch.where(mask[..., None], logits, logits.new_zeros(()))
    per_step = F.cross_entropy(safe_logits.reshape(-1, logits.shape[-1]), safe_targets.reshape(-1),
                               reduction="none").view(mask.shape)
    per_step = torch.where(mask, per_step, per_step.new_zeros(()))
    if reduction == "none":
        return per_step
    total = per_step.sum()
    if reduction == "sum":
        return total
    count = normalizer if normalizer is not None else mask.sum().clamp(min=1)
    return total / count
