"""Argument checks that run before any computation, each naming the argument and the value."""

import numbers
from typing import Sequence

import torch
from torch import Tensor


class PackedRNNError(ValueError, RuntimeError):
    """Bad arguments to packedrnn. Derives from both ValueError and RuntimeError, so code written
    to catch either (nn.LSTM raises both kinds for bad input) keeps working."""


def fail(message: str):
    raise PackedRNNError(message)


def _shape(t: Tensor) -> str:
    return "(" + ", ".join(str(s) for s in t.shape) + ")"


def check_input(input: Tensor, input_size: int) -> None:
    if not isinstance(input, Tensor):
        fail(f"input must be a Tensor or a PackedSequence, got {type(input).__name__}")
    if input.dim() != 3:
        fail(f"input must be 2-D (unbatched) or 3-D (batched), got a {input.dim()}-D tensor "
             f"of shape {_shape(input)}")
    if not input.is_floating_point():
        fail(f"input must be a floating-point tensor, got dtype {input.dtype}")
    if input.shape[-1] != input_size:
        fail(f"input.size(-1) must be equal to input_size: expected {input_size}, got "
             f"{input.shape[-1]} (input shape {_shape(input)})")


def check_weights(input: Tensor, weights: Sequence[Tensor], names: Sequence[str]) -> None:
    for name, w in zip(names, weights):
        if w.dtype != input.dtype:  # nn.LSTM's words, then the weight's name
            fail(f"RNN input dtype ({input.dtype}) does not match weight dtype ({w.dtype}) of {name}. "
                 f"Convert input: input.to({w.dtype}), or convert model: model.to({input.dtype})")
        if w.device != input.device:
            fail(f"input is on {input.device} but {name} is on {w.device}")


def check_hidden(name: str, nn_name: str, h: Tensor, expected: tuple, input: Tensor) -> None:
    """`name`: the argument as packedrnn calls it; `nn_name`: as nn.LSTM's message does (whose words
    code written against nn may match)."""
    if not isinstance(h, Tensor):
        fail(f"{name} must be a Tensor, got {type(h).__name__}")
    if tuple(h.shape) != expected:
        fail(f"Expected {nn_name} size {tuple(expected)}, got {list(h.shape)}: {name} has shape {_shape(h)}")
    if h.dtype != input.dtype:
        fail(f"{name} dtype {h.dtype} does not match input dtype {input.dtype}")
    if h.device != input.device:
        fail(f"{name} is on {h.device} but input is on {input.device}")


def lengths_to_tensor(lengths, batch: int, T: int) -> Tensor:
    """A list, tuple, or 1-D integer tensor of `batch` values in [0, T] -> int64 tensor.

    Values are checked here when they are on the host; lengths already on an accelerator are
    checked there (torch._assert_async), since reading them back would be a host sync. Inside
    torch.compile the device-side check serves every device (it adds no graph break).
    """
    if isinstance(lengths, Tensor):
        if lengths.dim() != 1:
            fail(f"lengths must be 1-D, got a {lengths.dim()}-D tensor of shape {_shape(lengths)}")
        if lengths.dtype == torch.bool or lengths.is_complex():
            fail(f"lengths must have an integer dtype, got {lengths.dtype}")
        if lengths.is_floating_point():
            if lengths.device.type != "cpu" or torch.compiler.is_compiling():
                fail(f"lengths must have an integer dtype, got {lengths.dtype} on {lengths.device} (a "
                     "floating-point tensor is taken on the CPU only, where its values can be checked)")
            return lengths_to_tensor(lengths.tolist(), batch, T)
        values = lengths
    elif isinstance(lengths, (list, tuple)) or hasattr(lengths, "__array__"):
        values = torch.tensor(_integers(lengths), dtype=torch.int64).reshape(-1)
    else:
        fail(f"lengths must be a sequence of ints (list, tuple, numpy array) or a 1-D integer tensor, "
             f"got {type(lengths).__name__}")
    if values.numel() != batch:
        fail(f"len(lengths)={values.numel()} but batch size is {batch}")
    values = values.to(torch.int64)
    if values.device.type == "cpu" and not torch.compiler.is_compiling():
        low = (values < 0).nonzero()
        if low.numel():
            i = int(low[0])
            fail(f"lengths[{i}] = {int(values[i])} is negative")
        high = (values > T).nonzero()
        if high.numel():
            i = int(high[0])
            fail(f"lengths[{i}] = {int(values[i])} exceeds T = {T}")
    else:
        # A fixed message: formatting T into it would specialise T under torch.compile.
        torch._assert_async(((values >= 0) & (values <= T)).all(),
                            "packedrnn: every lengths[b] must be in [0, T]")
    return values


def _integers(lengths) -> list:
    """A list, tuple or array of per-row lengths as Python ints: ints, numpy integers, 0-d integer
    tensors or arrays, and integral floats (a data loader's float array) are taken; anything else,
    4.5 and True included, is an error naming the entry."""
    if not isinstance(lengths, (list, tuple)):  # an array (numpy, or anything with __array__)
        import numpy
        array = numpy.asarray(lengths)
        if array.ndim != 1:
            fail(f"lengths must be 1-D, got a {array.ndim}-D array of shape {tuple(array.shape)}")
        lengths = array.tolist()
    values = []
    for i, v in enumerate(lengths):
        item = v.item() if isinstance(v, Tensor) and v.dim() == 0 else v
        if hasattr(item, "ndim") and getattr(item, "ndim") == 0 and hasattr(item, "item"):
            item = item.item()  # a numpy scalar or 0-d array
        whole = isinstance(item, numbers.Integral) or (isinstance(item, numbers.Real) and float(item).is_integer())
        if isinstance(item, bool) or not whole:
            fail(f"lengths[{i}] = {v!r} is not an integer")
        values.append(int(item))
    return values


def lengths_on(values: Tensor, device: torch.device) -> Tensor:
    """Move int64 lengths to `device` without a host sync (pinned memory, non_blocking)."""
    if values.device == device:
        return values
    if values.device.type == "cpu" and device.type == "cuda":
        return values.pin_memory().to(device, non_blocking=True)
    return values.to(device)


def check_unbatched_lengths(lengths):
    """The one length of an unbatched [T, I] input (an int, a 0-d tensor or None) -> batch form."""
    if lengths is None:
        return None
    if isinstance(lengths, Tensor) and lengths.dim() == 0:
        return lengths.reshape(1)
    if isinstance(lengths, numbers.Integral) and not isinstance(lengths, bool):
        return [int(lengths)]
    fail(f"for unbatched 2-D input, lengths must be an int or None, got {lengths!r}")
