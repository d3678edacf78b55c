"""PackedLSTM/GRU/RNN against nn + pack_padded_sequence on random configurations (hypothesis):
cell, layers, directions, batch_first, bias, proj_size, hx, dtype, B up to 64, T up to 300, lengths
with ties, zeros, all equal to T, max below T, NaN in the padding. Outputs, states and every
gradient. 200 examples in the default run, 2,000 under `-m slow`.

A failure prints `Falsifying example: ...(config=Config(...))`; `check(Config(...))` with that text
reruns exactly that case.
"""

from dataclasses import dataclass
from typing import Tuple

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import CELLS, loss_of, make_pair, random_inputs, run_ours, run_torch

# docs/ARCHITECTURE.md, "Tolerances": relative to scale (max |a-b| / max(1, max |b|)), since these
# shapes reach the benchmark's sizes.
TOL = {torch.float64: dict(out=1e-10, input_grad=1e-10, weight_grad=1e-10),
       torch.float32: dict(out=1e-5, input_grad=1e-5, weight_grad=2e-4)}


@dataclass(frozen=True)
class Config:
    cell: str
    layers: int
    bidirectional: bool
    batch_first: bool
    bias: bool
    proj_size: int
    with_hx: bool
    dtype: str
    input_size: int
    hidden_size: int
    T: int
    lengths: Tuple[int, ...]
    seed: int


@st.composite
def configs(draw):
    cell = draw(st.sampled_from(CELLS))
    hidden = draw(st.integers(1, 8))
    T = draw(st.integers(1, 300))
    B = draw(st.integers(1, 64))
    style = draw(st.sampled_from(["random", "ties", "zeros", "all_T", "below_T"]))
    if style == "all_T":
        lengths = [T] * B
    elif style == "ties":
        pool = draw(st.lists(st.integers(0, T), min_size=1, max_size=3))
        lengths = draw(st.lists(st.sampled_from(pool), min_size=B, max_size=B))
    elif style == "zeros":
        lengths = draw(st.lists(st.sampled_from([0, draw(st.integers(0, T))]), min_size=B, max_size=B))
    elif style == "below_T":
        lengths = draw(st.lists(st.integers(0, max(T - 1, 0)), min_size=B, max_size=B))
    else:
        lengths = draw(st.lists(st.integers(0, T), min_size=B, max_size=B))
    return Config(
        cell=cell, layers=draw(st.integers(1, 3)), bidirectional=draw(st.booleans()),
        batch_first=draw(st.booleans()), bias=draw(st.booleans()),
        proj_size=draw(st.integers(1, hidden - 1)) if cell == "LSTM" and hidden > 1 and draw(st.booleans()) else 0,
        with_hx=draw(st.booleans()), dtype=draw(st.sampled_from(["float64", "float32"])),
        input_size=draw(st.integers(1, 6)), hidden_size=hidden, T=T, lengths=tuple(lengths),
        seed=draw(st.integers(0, 2**31 - 1)))


def _relative(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1)).item() if a.numel() else 0.0


def _rows(module, x, states, rows):
    """x [.., B, ..] and states [L*D, B, *] restricted to the batch rows `rows` (differentiably)."""
    index = torch.tensor(rows, device=x.device)
    return x.index_select(0 if module.batch_first else 1, index), [s.index_select(1, index) for s in states]


def check(config: Config):
    dtype = getattr(torch, config.dtype)
    kw = dict(num_layers=config.layers, bidirectional=config.bidirectional, batch_first=config.batch_first,
              bias=config.bias)
    if config.proj_size:
        kw["proj_size"] = config.proj_size
    torch.manual_seed(config.seed)
    ours, theirs = make_pair(config.cell, config.input_size, config.hidden_size, dtype=dtype, **kw)
    lengths = list(config.lengths)
    x, hx = random_inputs(ours, lengths, config.T, with_hx=config.with_hx, seed=config.seed)
    initial = [] if hx is None else (list(hx) if isinstance(hx, tuple) else [hx])
    out, states = run_ours(ours, x, hx, lengths)

    # Rows of length 0 (pack_padded_sequence refuses them): all-zero output, the initial state.
    zero = [b for b, n in enumerate(lengths) if n == 0]
    if zero:
        out_z, states_z = _rows(ours, out, states, zero)
        assert not out_z.any(), "output of a length-0 row is not zero"
        for s, h in zip(states_z, _rows(ours, x, initial, zero)[1] if initial else [None] * len(states_z)):
            assert torch.equal(s, h if h is not None else torch.zeros_like(s)), "state of a length-0 row changed"

    # The others against nn + packing, the loss on those rows alone.
    kept = [b for b, n in enumerate(lengths) if n > 0]
    if not kept:
        return
    out_k, states_k = _rows(ours, out, states, kept)
    x_k, initial_k = _rows(ours, x, initial, kept)
    x_k = x_k.detach().requires_grad_()
    initial_k = [h.detach().requires_grad_() for h in initial_k]
    hx_k = None if hx is None else (tuple(initial_k) if isinstance(hx, tuple) else initial_k[0])
    out_t, states_t = run_torch(theirs, x_k, hx_k, [lengths[b] for b in kept])
    errs = {"out": max([_relative(out_k, out_t)] + [_relative(a, b) for a, b in zip(states_k, states_t)])}

    ours_grads = torch.autograd.grad(loss_of(out_k, tuple(states_k)), [x] + initial + list(ours.parameters()))
    theirs_grads = torch.autograd.grad(loss_of(out_t, tuple(states_t)), [x_k] + initial_k + list(theirs.parameters()))
    n = 1 + len(initial)
    dx, d_initial = _rows(ours, ours_grads[0], list(ours_grads[1:n]), kept)
    errs["input_grad"] = max(_relative(a, b) for a, b in zip([dx] + d_initial, theirs_grads[:n]))
    errs["weight_grad"] = max(_relative(a, b) for a, b in zip(ours_grads[n:], theirs_grads[n:]))
    for k, v in errs.items():
        assert v <= TOL[dtype][k], f"{k} differs by {v:.3g} > {TOL[dtype][k]:.1g} (relative to scale)"


def _settings(examples):
    return settings(max_examples=examples, deadline=None, database=None, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@_settings(200)
@given(configs())
def test_random_configurations(config):
    check(config)


@pytest.mark.slow
@_settings(2000)
@given(configs())
def test_random_configurations_2000(config):
    check(config)
