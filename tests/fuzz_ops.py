"""A property-based fuzzer of the compiled ops (csrc/ops.cpp), called directly, as a traced graph or
an exporter would call them: no Python validation in front.

    python tests/fuzz_ops.py EXAMPLES        (tests/test_fuzz_ops.py runs it in a subprocess, so a
                                              crash fails that test instead of killing the suite)

Each example draws a valid call (cell, sizes, dtype, lengths with ties and zeros, biases, projection,
a shuffled index, non-contiguous tensors, a device the ops serve), then applies up to three
mutations (lengths negative, huge, > T, of another dtype or count; a wrong index; wrong or missing
optional tensors; wrong shapes, dtypes, devices; a bad cell or path; a wrong `saved` or gradient for
the backward op). Every call must end in a clean Python exception (a PackedRNNError where the
mutation is a bad value of an argument) or in the reference's result (packedrnn.ops.reference_layer;
the backward against its autograd), never in a crash, and a mutation that makes the call invalid
must not be accepted.
"""

import sys
from dataclasses import dataclass, field
from typing import Callable, List, Optional

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import packedrnn  # noqa: F401  (registers the ops)
from packedrnn import cells, ops
from packedrnn.validation import PackedRNNError

DEVICES = [d for d in ("cpu", "cuda") if ops.available(d) and (d == "cpu" or torch.cuda.is_available())]
TOL = {torch.float32: 1e-4, torch.float64: 1e-10}
NAMES = ["cell", "x", "lengths", "tokens", "host_lengths", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh", "w_hr",
         "train", "path"]


@dataclass
class Call:
    args: dict
    valid: bool = True                       # the call must succeed (and match the reference)
    expect: type = Exception                 # what an invalid call must raise
    changed: List[str] = field(default_factory=list)

    def spoil(self, what: str, expect: type = Exception):
        """The call is now invalid and must raise `expect`; two spoilings expecting different
        classes leave only Exception (either check may fire first)."""
        if not self.valid and self.expect is not expect:
            expect = Exception
        self.valid, self.expect = False, expect
        self.changed.append(what)


def draw_call(data) -> Call:
    spec = cells.CELLS[data.draw(st.sampled_from(sorted(cells.CELLS)), label="cell")]
    device = data.draw(st.sampled_from(DEVICES), label="device")
    dtype = data.draw(st.sampled_from([torch.float32, torch.float64]), label="dtype")
    T = data.draw(st.integers(0, 7), label="T")
    B = data.draw(st.integers(0, 5), label="B")
    I = data.draw(st.integers(1, 4), label="I")
    H = data.draw(st.integers(1, 5), label="H")
    D = data.draw(st.integers(1, 2), label="D")
    bias = data.draw(st.booleans(), label="bias")
    P = data.draw(st.integers(1, H - 1), label="P") if spec.projection and H > 1 and data.draw(
        st.booleans(), label="proj") else H
    lengths = data.draw(st.lists(st.integers(0, T), min_size=B, max_size=B), label="lengths")
    gen = torch.Generator().manual_seed(data.draw(st.integers(0, 2**31), label="seed"))

    def rand(*shape):
        t = torch.randn(*shape, generator=gen, dtype=dtype) * 0.5
        return t.to(device)

    G = spec.gates * H
    x = rand(T, B, I)
    if data.draw(st.booleans(), label="x non-contiguous"):
        x = rand(B, T, I).transpose(0, 1)  # a view with other strides: the op must take it
    lengths_t = torch.tensor(lengths, dtype=torch.int64).reshape(B)
    tokens = torch.ops.packedrnn.token_index(lengths_t, T)
    if data.draw(st.booleans(), label="tokens shuffled"):
        tokens = tokens[torch.randperm(tokens.numel(), generator=gen)]  # any order is valid
    args = dict(cell=spec.code, x=x, lengths=lengths_t.to(device), tokens=tokens.to(device),
                host_lengths=lengths_t if data.draw(st.booleans(), label="host_lengths") else None,
                h0=rand(D, B, P), c0=rand(D, B, H) if spec.cell_state else None,
                w_ih=rand(D, G, I), w_hh=rand(D, G, P), b_ih=rand(D, G) if bias else None,
                b_hh=rand(D, G) if bias else None, w_hr=rand(D, P, H) if P != H else None,
                train=data.draw(st.booleans(), label="train"), path=0)
    return Call(args)


def mutations(call: Call) -> List[Callable]:
    a = call.args
    T, B = a["x"].shape[0], a["x"].shape[1]
    D, G, P = a["w_ih"].shape[0], a["w_ih"].shape[1], a["w_hh"].shape[2]  # as drawn, before any mutation

    def set_lengths(values, expect=PackedRNNError):
        def apply(data):
            a["lengths"] = torch.tensor(values, dtype=torch.int64, device=a["lengths"].device)
            call.spoil("lengths = " + str(values), expect)
        return apply

    def lengths_value(data):
        if B == 0:
            return
        if a["lengths"].device.type == "meta":
            return
        values = a["lengths"].reshape(-1).tolist()
        if not values:
            return
        b = data.draw(st.integers(0, len(values) - 1), label="row")
        values[b] = data.draw(st.sampled_from([-1, -2**62, T + 1, T + 1000, 10**9, 2**62, 2**63 - 1]),
                              label="bad length")
        set_lengths(values)(data)

    def lengths_dtype(data):
        dtype = data.draw(st.sampled_from([torch.int32, torch.float32, torch.bool, torch.int16]), label="lengths dtype")
        a["lengths"] = a["lengths"].to(dtype)
        call.spoil(f"lengths dtype {dtype}", PackedRNNError)

    def lengths_count(data):
        n = data.draw(st.sampled_from([B + 1, max(B - 1, 0) if B else 1, 0]), label="count")
        if n != B:
            a["lengths"] = torch.zeros(n, dtype=torch.int64, device=a["lengths"].device)
            call.spoil(f"lengths count {n}", PackedRNNError)

    def lengths_shape(data):
        a["lengths"] = a["lengths"].reshape(1, -1)
        call.spoil("lengths 2-D", PackedRNNError)

    def tokens_bad(data):
        kind = data.draw(st.sampled_from(["drop", "repeat", "out of range", "negative", "padded", "int32", "2-D",
                                          "none"]), label="tokens")
        if a["tokens"] is None or a["tokens"].device.type == "meta":
            return
        t = a["tokens"].cpu()
        if kind == "drop" and t.numel():
            t = t[1:]
        elif kind == "repeat" and t.numel():
            t = torch.cat([t, t[:1]])
        elif kind == "out of range" and t.numel():
            t = t.clone()
            t[0] = T * B + data.draw(st.integers(0, 10**12), label="beyond")
        elif kind == "negative" and t.numel():
            t = t.clone()
            t[-1] = -data.draw(st.integers(1, 10**12), label="below")
        elif kind == "padded":
            valid = set(t.tolist())
            padded = [p for p in range(T * B) if p not in valid]
            if not padded or not t.numel():
                return
            t = t.clone()
            t[0] = padded[0]
        elif kind == "int32":
            t = t.to(torch.int32)
        elif kind == "2-D":
            t = t.reshape(1, -1)
        elif kind == "none":
            if a["x"].device.type == "cpu":  # the CUDA op runs without an index
                a["tokens"] = None
                call.spoil("tokens None")
            return
        else:
            return
        a["tokens"] = t.to(a["x"].device)
        call.spoil("tokens " + kind)

    def host_lengths_bad(data):
        bad = data.draw(st.sampled_from([[-1] * B, [T + 1] * B, [0] * (B + 1)]), label="host_lengths")
        if B == 0 and len(bad) == 0:
            return
        a["host_lengths"] = torch.tensor(bad, dtype=torch.int64).reshape(-1)
        call.spoil("host_lengths " + str(bad), PackedRNNError)

    def shape_bad(data):
        name = data.draw(st.sampled_from(["x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh", "w_hr"]), label="tensor")
        t = a[name]
        if t is None:
            return
        how = data.draw(st.sampled_from(["grow", "shrink", "flatten", "scalar"]), label="how")
        dim = data.draw(st.integers(0, t.dim() - 1), label="dim")
        if how == "grow":
            shape = list(t.shape)
            shape[dim] += 1
            a[name] = torch.zeros(shape, dtype=t.dtype, device=t.device)
        elif how == "shrink":
            if t.shape[dim] == 0:
                return
            a[name] = t.narrow(dim, 0, t.shape[dim] - 1)
        elif how == "flatten":
            if t.dim() < 2:
                return
            a[name] = t.reshape(-1)
        else:
            a[name] = t.new_zeros(())
        if tuple(a[name].shape) == tuple(t.shape):
            return
        lengths = a["lengths"]
        if (name == "x" and dim == 0 and how in ("grow", "shrink") and lengths.device.type != "meta"
                and lengths.dtype == torch.int64 and bool((lengths <= a["x"].shape[0]).all())):
            call.changed.append(f"x with T = {a['x'].shape[0]}")  # other T, the lengths still fit: valid
        else:
            call.spoil(f"{name} {how}", PackedRNNError)

    def optional_bad(data):
        name = data.draw(st.sampled_from(["c0", "b_ih", "b_hh", "w_hr"]), label="optional")
        t = a[name]
        if t is not None:
            a[name] = None
            if name == "w_hr":
                call.spoil("w_hr removed", PackedRNNError)  # P != H without a projection
            else:
                call.spoil(f"{name} removed", PackedRNNError)
        else:
            shape = {"c0": (D, B, P), "b_ih": (D, G), "b_hh": (D, G), "w_hr": (D, P, P)}[name]
            a[name] = torch.zeros(shape, dtype=a["x"].dtype, device=a["x"].device)
            call.spoil(f"{name} added", PackedRNNError)

    def dtype_bad(data):
        name = data.draw(st.sampled_from(["x", "h0", "w_ih", "w_hh", "b_ih", "w_hr", "c0"]), label="tensor")
        dtype = data.draw(st.sampled_from([torch.float16, torch.bfloat16, torch.int64, torch.float64,
                                           torch.float32]), label="dtype")
        t = a[name]
        if t is None or t.dtype == dtype:
            return
        a[name] = t.to(dtype)
        call.spoil(f"{name} {dtype}")

    def device_bad(data):
        # (a meta tensor sends the call to the fake kernel, which must refuse the mix as well)
        name = data.draw(st.sampled_from(["x", "h0", "w_hh", "lengths", "tokens", "b_hh"]), label="tensor")
        t = a[name]
        if t is None:
            return
        a[name] = torch.empty(t.shape, dtype=t.dtype, device="meta")
        call.spoil(f"{name} on meta")

    def code_bad(data):
        if data.draw(st.booleans(), label="cell or path"):
            a["cell"] = data.draw(st.sampled_from([-1, 4, 99, 2**40]), label="code")
            call.spoil(f"cell {a['cell']}", PackedRNNError)
        else:
            a["path"] = data.draw(st.sampled_from([-1, 1 << 20, 2**40, 7 << 4]), label="path")
            call.spoil(f"path {a['path']}", PackedRNNError)

    def strides_odd(data):
        name = data.draw(st.sampled_from(["h0", "w_ih", "w_hh"]), label="tensor")
        t = a[name]
        if t.numel() == 0 or t.dim() == 0 or t.device.type == "meta":
            return
        wide = torch.zeros(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype, device=t.device)
        wide[..., ::2] = t
        a[name] = wide[..., ::2]  # the same values through a strided view: still valid
        call.changed.append(f"{name} strided")

    return [lengths_value, lengths_dtype, lengths_count, lengths_shape, tokens_bad, host_lengths_bad,
            shape_bad, optional_bad, dtype_bad, device_bad, code_bad, strides_odd]


def check_forward(call: Call):
    a = call.args
    try:
        out, h_n, c_n, saved = torch.ops.packedrnn.rnn_layer(*(a[n] for n in NAMES))
    except Exception as e:  # noqa: BLE001 - any clean Python exception is an answer
        assert not call.valid, f"a valid call raised {type(e).__name__}: {e}"
        assert isinstance(e, call.expect), f"{call.changed}: expected {call.expect.__name__}, got {e!r}"
        counts["refused"] += 1
        return None
    counts["accepted"] += 1
    assert call.valid, f"an invalid call was accepted: {call.changed}"
    want = ops.reference_layer(*(a[n] for n in NAMES[:2]), a["lengths"], *(a[n] for n in NAMES[5:12]))
    tol = TOL[a["x"].dtype]
    for got, ref in zip((out, h_n) + ((c_n,) if len(want) == 3 else ()), want):
        torch.testing.assert_close(got, ref, rtol=0, atol=tol)
    return saved


def check_backward(call: Call, saved: torch.Tensor, data):
    """The backward op on the forward's own saved, against the reference's autograd; or spoiled."""
    a = call.args
    out_shape = (a["x"].shape[0], a["x"].shape[1], a["w_ih"].shape[0] * a["w_hh"].shape[2])
    gen = torch.Generator().manual_seed(data.draw(st.integers(0, 2**31), label="grad seed"))

    def rand(*shape):
        return torch.randn(*shape, generator=gen, dtype=a["x"].dtype).to(a["x"].device)
    grads = dict(grad_out=rand(*out_shape), grad_hn=rand(*a["h0"].shape),
                 grad_cn=rand(*a["c0"].shape) if a["c0"] is not None else a["x"].new_zeros(0))
    spoiled = data.draw(st.sampled_from([None, "saved", "grad_out", "grad_hn", "grad_cn", "saved dtype"]),
                        label="backward mutation")
    valid = True
    if spoiled == "saved":
        saved = saved.reshape(-1)[:-1] if saved.numel() else saved.new_zeros(3)
        valid = False
    elif spoiled == "saved dtype":
        saved = saved.to(torch.float16)
        valid = False
    elif spoiled is not None and not (spoiled == "grad_cn" and a["c0"] is None):
        g = grads[spoiled]
        grads[spoiled] = torch.zeros(g.numel() + 1, dtype=g.dtype, device=g.device)
        valid = False
    try:
        got = torch.ops.packedrnn.rnn_layer_backward(*(a[n] for n in NAMES[:12]), saved, grads["grad_out"],
                                                     grads["grad_hn"], grads["grad_cn"], a["path"])
    except Exception as e:  # noqa: BLE001
        assert not valid, f"a valid backward raised {type(e).__name__}: {e}"
        return
    assert valid, f"an invalid backward was accepted: {spoiled}"
    inputs = {n: a[n].detach().clone().requires_grad_() for n in ("x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh",
                                                                  "w_hr") if a[n] is not None}
    full = {**a, **inputs}
    want = ops.reference_layer(full["cell"], full["x"], a["lengths"], *(full[n] for n in NAMES[5:12]))
    upstream = [grads["grad_out"], grads["grad_hn"]] + ([grads["grad_cn"]] if len(want) == 3 else [])
    # (the zero term keeps the sum differentiable where no output depends on an input: T = 0, B = 0)
    loss = sum((w * g).sum() for w, g in zip(want, upstream)) + sum(0 * t.sum() for t in inputs.values())
    ref = torch.autograd.grad(loss, list(inputs.values()), allow_unused=True, materialize_grads=True)
    names = ["x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh", "w_hr"]
    tol = 10 * TOL[a["x"].dtype]
    for name, r in zip(inputs, ref):
        torch.testing.assert_close(got[names.index(name)], r, rtol=0, atol=tol, msg=lambda m: f"d{name}: {m}")


def check_token_index(data):
    T = data.draw(st.integers(-3, 8), label="T")
    lengths = data.draw(st.lists(st.integers(-2**63, 2**63 - 1) | st.integers(-2, 10), max_size=6), label="lengths")
    t = torch.tensor(lengths, dtype=torch.int64)
    valid = T >= 0 and all(0 <= v <= T for v in lengths)
    try:
        tokens = torch.ops.packedrnn.token_index(t, T)
    except Exception as e:  # noqa: BLE001
        assert not valid, f"token_index on valid lengths raised {e!r}"
        assert isinstance(e, PackedRNNError), repr(e)
        return
    assert valid, f"token_index accepted lengths {lengths} with T = {T}"
    B = len(lengths)
    expected = [t_ * B + b for t_ in range(T) for b in range(B) if t_ < lengths[b]]
    assert tokens.tolist() == expected


counts = {"examples": 0, "accepted": 0, "refused": 0}


def run(examples: int) -> None:
    @settings(max_examples=examples, deadline=None, database=None, print_blob=True,
              suppress_health_check=list(HealthCheck))
    @given(st.data())
    def fuzz(data):
        counts["examples"] += 1
        if data.draw(st.integers(0, 9), label="which op") == 0:
            return check_token_index(data)
        call = draw_call(data)
        moves = mutations(call)
        for i in data.draw(st.lists(st.integers(0, len(moves) - 1), max_size=3, unique=True), label="mutations"):
            moves[i](data)  # each kind once: two of a kind could undo each other
        saved = check_forward(call)
        if saved is not None and call.args["train"]:
            check_backward(call, saved, data)

    fuzz()


if __name__ == "__main__":
    run(int(sys.argv[1]) if len(sys.argv) > 1 else 300)
    print(f"fuzz_ops: {counts['examples']} examples (rnn_layer calls: {counts['accepted']} computed and equal to "
          f"the reference, {counts['refused']} refused cleanly), no crash")
