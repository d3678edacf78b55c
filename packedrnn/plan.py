"""The Python side's rules that pick a path, and the one place that reads packedrnn's switches.

Users need no switch: every path computes the same contract, and the rules below (and
csrc/cuda/rules.h for what only the device knows) pick the fastest measured one. Developers force
a path to compare or to test it, either for a block of code:

    with packedrnn.tuning(backend="cuda", recurrence="persistent:barrier"):
        ...

or for a process, through the environment (read at every call; `tuning` overrides it):

| `tuning` keyword | environment variable   | values                                    | default          |
|------------------|------------------------|-------------------------------------------|------------------|
| backend          | PACKEDRNN_BACKEND      | reference, cpu, cuda                      | the compiled op for the device and dtype, else reference |
| tokens           | PACKEDRNN_TOKENS       | 1 (always), 0 (never)                     | gathers(): by size |
| recurrence       | PACKEDRNN_RECURRENCE   | step, gemm, persistent[:tagged or :barrier][:staged or :reduce] | by size (rules.h) |

- backend: which implementation runs a layer; a forced backend that cannot serve the call is an
  error (PackedRNNError), never a fallback.
- tokens (CUDA): whether a layer whose lengths were given on the CPU gets the token index and the
  host lengths, so that it runs the products around the recurrence over the valid tokens only
  (gathers()).
- recurrence (CUDA): the per-step kernels with their own products (step) or with cuBLAS products
  (gemm), or the persistent kernels (persistent; a call they refuse is then an error), optionally
  with the forward's exchange of h and the backward's form forced. The op receives it as its `path`
  argument (encode_recurrence), decoded by rules.h: nothing in csrc/ reads the environment.

`tuning` is process-wide (not per thread) and nests; a keyword given as None restores the default
rule, a keyword left out keeps what the environment or an outer `tuning` says.
"""

import contextlib
import os
from typing import Optional

import torch
from torch import Tensor

from .validation import fail, lengths_on

BACKENDS = ("reference", "cpu", "cuda")
_RECURRENCES = {"persistent": 1, "step": 2, "gemm": 3}
_EXCHANGES = {"tagged": 1, "barrier": 2}
_BACKWARD_FORMS = {"staged": 1, "reduce": 2}
_ENV = {"backend": "PACKEDRNN_BACKEND", "tokens": "PACKEDRNN_TOKENS", "recurrence": "PACKEDRNN_RECURRENCE"}

# What `tuning` blocks say now (a module global, not a ContextVar: torch.compile reads and guards
# on it, so a change recompiles instead of being ignored).
_overrides: dict = {}


def _check(name: str, value: str) -> str:
    """A switch's value, normalised; a PackedRNNError naming it when it is not one of its values."""
    value = value.strip().lower()
    if name == "backend" and value not in BACKENDS:
        fail(f"backend {value!r} is not one of {', '.join(BACKENDS)} ({_ENV[name]} or packedrnn.tuning)")
    if name == "tokens" and value not in ("0", "1"):
        fail(f"tokens {value!r} is not 1 or 0 ({_ENV[name]} or packedrnn.tuning)")
    if name == "recurrence":
        encode_recurrence(value)
    return value


def setting(name: str) -> Optional[str]:
    """A switch's value ("" or None: the default rule): a `tuning` block's, else the environment's."""
    if name in _overrides:
        return _overrides[name]
    value = os.environ.get(_ENV[name], "")
    return _check(name, value) if value.strip() else None


@contextlib.contextmanager
def tuning(**switches):
    """Forces the given switches (backend, tokens, recurrence; module docstring) inside the block."""
    unknown = set(switches) - set(_ENV)
    if unknown:
        fail(f"packedrnn.tuning takes {', '.join(_ENV)}; got {', '.join(sorted(unknown))}")
    values = {}
    for name, value in switches.items():
        if isinstance(value, bool) and name == "tokens":
            value = "1" if value else "0"
        values[name] = None if value is None else _check(name, str(value))
    saved = dict(_overrides)
    _overrides.update(values)
    try:
        yield
    finally:
        _overrides.clear()
        _overrides.update(saved)


def encode_recurrence(spec: Optional[str]) -> int:
    """The op's `path` argument for a recurrence setting: recurrence | exchange << 2 | backward << 4
    (0: every choice by rules.h). "persistent:barrier:staged" -> 1 | 2 << 2 | 1 << 4 = 25."""
    if not spec:
        return 0
    kind, *forms = spec.split(":")
    if kind not in _RECURRENCES:
        fail(f"recurrence {spec!r}: {kind!r} is not one of {', '.join(_RECURRENCES)}")
    path = _RECURRENCES[kind]
    for form in forms:
        if kind != "persistent" or not (form in _EXCHANGES or form in _BACKWARD_FORMS):
            fail(f"recurrence {spec!r}: {form!r} is not a form of the persistent kernels "
                 f"({', '.join(list(_EXCHANGES) + list(_BACKWARD_FORMS))})")
        path |= _EXCHANGES[form] << 2 if form in _EXCHANGES else _BACKWARD_FORMS[form] << 4
    return path


def path() -> int:
    """The op's `path` argument now (the recurrence setting, encoded)."""
    return encode_recurrence(setting("recurrence"))


@torch.compiler.assume_constant_result
def _op_backend(device_type: str, dtype: torch.dtype) -> Optional[str]:
    """The compiled backend that serves this device and dtype, or None (constant under compile)."""
    from . import ops
    if not ops.available(device_type):
        return None
    if device_type == "cpu" and dtype not in ops.CPU_DTYPES:
        return None
    return device_type


def backend(device="cpu", dtype: torch.dtype = torch.float32) -> str:
    """The backend a call with tensors on `device` of `dtype` would use."""
    device_type = torch.device(device).type
    forced = setting("backend")
    if not forced:
        return _op_backend(device_type, dtype) or "reference"
    if forced == "reference":
        return forced
    if forced != device_type:
        fail(f"backend {forced} (forced) cannot run tensors on {device_type}")
    if _op_backend(device_type, dtype) is None:
        from . import ops
        fail(f"backend {forced} (forced) but the compiled {forced} ops are unavailable for {dtype}: "
             f"{ops.unavailable_reason(device_type, dtype)}")
    return forced


# Where the lengths were given on the host, a CUDA layer may get the token index and the host
# lengths (CallLengths.for_op; reading them there is no sync): the op then runs the products
# around the recurrence over the valid (t, b) rows only, gathered
# (csrc/layer_gemms.h), and a large one-direction fp32 layer's step products stop at the rows
# still active. The gather costs memory traffic and a few launches, so a layer gathers where the
# forward products it skips are large: fp32 or fp64 and at least GATHER_FLOPS. H200, RESULTS.md
# 2026-11-26 (seventh session): 10-17% faster at 37-168 GFLOP skipped per layer, 0.1-1 ms slower
# at 1.6-3.8 GFLOP and in bf16, whose products are cheap. (Measured when the op still kept
# full-size copies beside the gathered rows; it now keeps gx, saved and the gate gradients by token
# only, which lowers the memory too: the tokens=0 and tokens=1 columns of scripts/switch_sweep.py
# re-measure the threshold.) Example: LSTM H=1024 I=1024 B=256 T=200, half the positions padded:
# 25600 * 2 * 4096 * 1024 = 215 GFLOP skipped: gather.
GATHER_FLOPS = 10e9


def gathers(x: Tensor, host_lengths: Tensor, G: int, D: int) -> bool:
    """Whether the CUDA op gets the host lengths for layer input x [T, B, I] (see GATHER_FLOPS)."""
    forced = setting("tokens")
    if forced:
        return forced == "1"
    if x.dtype not in (torch.float32, torch.float64) or torch.compiler.is_compiling():
        return False  # under compile the sum below would be data-dependent: a graph break
    T, B, I = x.shape
    skipped = (T * B - int(host_lengths.sum())) * 2 * G * I * D
    return skipped >= GATHER_FLOPS


class CallLengths:
    """A call's lengths, resolved once per call (packedrnn.functional.rnn) and handed to every layer:
    `device` [B] int64 on x's device (one copy at most); `host` [B] on the CPU where the caller gave
    them there; and the token index (the valid positions, torch.ops.packedrnn.token_index), made at
    the first layer whose op takes it and reused by the later layers and their backward."""

    def __init__(self, given: Optional[Tensor], device: torch.device, B: int, T: int):
        self.T = T
        if given is None:  # every row T long
            self.device = torch.full((B,), T, dtype=torch.int64, device=device)
        else:
            self.device = lengths_on(given, device)
        on_host = given is not None and given.device.type == "cpu"
        self.host = self.device if device.type == "cpu" else (given if on_host else None)
        self._tokens: Optional[Tensor] = None

    def tokens(self) -> Tensor:
        if self._tokens is None:
            self._tokens = lengths_on(torch.ops.packedrnn.token_index(self.host, self.T), self.device.device)
        return self._tokens

    def by_token(self, backend: str, x: Tensor, G: int, D: int) -> bool:
        """Whether a layer of this call reads only the valid positions of x (never its padding)."""
        return backend != "reference" and self.for_op(backend, x, G, D)[0] is not None

    def for_op(self, backend: str, x: Tensor, G: int, D: int):
        """(tokens, host_lengths) for a layer's op (csrc/ops.cpp): the CPU op always runs by token;
        CUDA where the lengths are on the host and gathers() says the skipped work pays."""
        if backend == "cpu":
            return self.tokens(), None
        if self.host is not None and x.is_cuda and gathers(x, self.host, G, D):
            return self.tokens(), self.host
        return None, None
