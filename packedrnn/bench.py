"""Kernel benchmark: packedrnn against nn.LSTM/nn.GRU/nn.RNN, same answers first, then speed.

    python -m packedrnn.bench                      # the gpu suite on CUDA, else the cpu suite
    python -m packedrnn.bench --suite smoke        # seconds
    python -m packedrnn.bench --case cell=GRU,B=32,T=300,H=256,layers=2,bidir=1,train=1
    python -m packedrnn.bench --out DIR            # where results.json and speedup.png go

Per case, every backend runs the same inputs:
  packedrnn:<backend>  each packedrnn backend available here (cuda, cpu, reference)
  packed               pack_padded_sequence(enforce_sorted=False) -> nn.LSTM -> pad_packed_sequence
  padded               nn.LSTM on the padded batch (does every step of every row: a speed
                       reference that computes wrong states for short rows)
On CUDA the torch rows run twice: TF32 allowed (torch's default for cuDNN) and TF32 off.
Before timing, packedrnn's output, final states and (for train rows) gradients are compared with
the packed nn.LSTM result (the tolerances of docs/ARCHITECTURE.md, relative to scale); a case that fails is
reported as WRONG and not timed.
"""

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, replace
from typing import Callable, Dict, List, Optional

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import packedrnn
from packedrnn.plan import backend as default_backend

DTYPES = {"fp32": torch.float32, "fp64": torch.float64, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Case:
    cell: str = "LSTM"
    B: int = 64
    T: int = 100
    H: int = 256
    I: int = 0  # 0: same as H
    layers: int = 1
    bidir: bool = False
    dtype: str = "fp32"
    train: bool = False
    lo: float = 0.1  # lengths ~ randint(max(1, int(lo*T)), T+1), lengths[0] = T, seed 0

    @property
    def input_size(self) -> int:
        return self.I or self.H

    def label(self) -> str:
        return (f"{self.cell} B={self.B} T={self.T} H={self.H} L={self.layers}"
                f"{' bi' if self.bidir else ''} {self.dtype} {'train' if self.train else 'fwd'}")

    def lengths(self) -> torch.Tensor:
        g = torch.Generator().manual_seed(0)
        lengths = torch.randint(max(1, int(self.lo * self.T)), self.T + 1, (self.B,), generator=g)
        lengths[0] = self.T
        return lengths

    def input(self, device) -> torch.Tensor:
        """x [B, T, I] (seed 1), requiring grad for train cases."""
        g = torch.Generator().manual_seed(1)
        x = torch.randn(self.B, self.T, self.input_size, generator=g).to(device=device, dtype=DTYPES[self.dtype])
        return x.requires_grad_(self.train)


SUITES: Dict[str, List[Case]] = {
    "smoke": [
        Case("LSTM", 8, 20, 32, train=True, lo=0.1),
        Case("GRU", 8, 20, 32, layers=2, bidir=True, train=True, lo=0.1),
        Case("LSTM", 6, 16, 24, train=False, lo=0.1),
        Case("RNN_RELU", 8, 20, 32, train=True, lo=0.1),
    ],
    # The CPU rows of the reference table the project started from (cuDNN/oneDNN figures quoted in
    # benchmarks/RESULTS.md): lengths randint(max(1, T//10), T+1), I = H; and an Elman row.
    "cpu": [
        Case("LSTM", 64, 100, 128, train=False, lo=0.1),
        Case("LSTM", 64, 100, 128, train=True, lo=0.1),
        Case("LSTM", 32, 200, 256, layers=2, bidir=True, train=True, lo=0.1),
        Case("GRU", 32, 200, 256, layers=2, bidir=True, train=True, lo=0.1),
        Case("LSTM", 16, 500, 64, train=True, lo=0.1),
        Case("RNN_TANH", 64, 100, 256, train=True, lo=0.1),
    ],
    # The first GPU table of that reference, row for row; and an Elman row.
    "gpu": [
        Case("LSTM", 64, 100, 256, train=False, lo=0.1),
        Case("LSTM", 64, 100, 256, train=True, lo=0.1),
        Case("LSTM", 64, 500, 512, layers=2, bidir=True, train=False, lo=0.25),
        Case("LSTM", 64, 500, 512, layers=2, bidir=True, train=True, lo=0.25),
        Case("LSTM", 64, 500, 512, layers=2, bidir=True, dtype="bf16", train=True, lo=0.25),
        Case("LSTM", 8, 1000, 512, train=False, lo=0.5),
        Case("LSTM", 256, 200, 1024, train=True, lo=0.25),
        Case("LSTM", 256, 200, 1024, dtype="bf16", train=True, lo=0.25),
        Case("GRU", 64, 500, 512, layers=2, bidir=True, train=True, lo=0.25),
        Case("LSTM", 32, 2000, 128, train=True, lo=0.05),
        Case("RNN_TANH", 64, 500, 512, layers=2, bidir=True, train=True, lo=0.25),
    ],
    # Per-step latency at small batch (anchors: cuDNN takes 11-12 us per step here in fp32/bf16).
    "steps": [
        Case("LSTM", 8, 1000, 512, dtype="fp32", train=False, lo=0.5),
        Case("LSTM", 8, 1000, 512, dtype="bf16", train=False, lo=0.5),
        Case("LSTM", 8, 1000, 512, dtype="fp16", train=False, lo=0.5),
        Case("LSTM", 8, 1000, 512, dtype="fp32", train=True, lo=0.5),
    ],
}


def parse_case(text: str) -> Case:
    """'cell=GRU,B=32,T=300,H=256,layers=2,bidir=1,dtype=bf16,train=1,lo=0.25' -> Case."""
    case = Case()
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        key = key.strip()
        if key not in Case.__dataclass_fields__:
            raise SystemExit(f"--case: unknown field {key!r}; fields: {', '.join(Case.__dataclass_fields__)}")
        kind = type(getattr(case, key))
        parsed = (value.strip() not in ("0", "false", "False", "no")) if kind is bool else kind(value)
        case = replace(case, **{key: parsed})
    if case.dtype not in DTYPES:
        raise SystemExit(f"--case: dtype must be one of {', '.join(DTYPES)}")
    if case.cell not in _MODULES:
        raise SystemExit(f"--case: cell must be one of {', '.join(_MODULES)}")
    return case


# ---------------------------------------------------------------------------------------------
# Running one backend


# A cell's module and torch's, and the keywords that pick the cell.
_MODULES = {"LSTM": (packedrnn.PackedLSTM, nn.LSTM, {}), "GRU": (packedrnn.PackedGRU, nn.GRU, {}),
            "RNN_TANH": (packedrnn.PackedRNN, nn.RNN, {"nonlinearity": "tanh"}),
            "RNN_RELU": (packedrnn.PackedRNN, nn.RNN, {"nonlinearity": "relu"})}


def _torch_model(case: Case, device, dtype):
    _, cls, kw = _MODULES[case.cell]
    return cls(case.input_size, case.H, case.layers, bidirectional=case.bidir, batch_first=True,
               device=device, dtype=dtype, **kw)


def _models(case: Case, device, dtype):
    torch.manual_seed(0)
    ours_cls, _, kw = _MODULES[case.cell]
    ours = ours_cls(case.input_size, case.H, case.layers, bidirectional=case.bidir, batch_first=True,
                    device=device, dtype=dtype, **kw)
    theirs = _torch_model(case, device, dtype)
    theirs.load_state_dict(ours.state_dict())
    return ours, theirs


def _compute(model, x, lengths, kind: str, train: bool, backend: Optional[str] = None):
    """Forward (and backward of output.sum() when train) of one backend kind. Returns
    (output [B, T, *], final states, grads of [x] + parameters or None)."""
    T = x.shape[1]
    with torch.set_grad_enabled(train):
        if kind == "ours":
            with packedrnn.tuning(backend=backend):
                out, state = model(x, lengths=lengths)
        elif kind == "packed":
            packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
            out, state = model(packed)
            out, _ = pad_packed_sequence(out, batch_first=True, total_length=T)
        else:
            out, state = model(x)
        grads = None
        if train:
            grads = torch.autograd.grad(out.sum(), [x] + list(model.parameters()))
    states = list(state) if isinstance(state, tuple) else [state]
    return out, states, grads


def _onnxruntime_runner(ours, x, lengths) -> Dict[str, Callable]:
    """{"onnxruntime": run} where onnxruntime and onnxscript are installed: the model exported with
    packedrnn's translation (a native ONNX LSTM/GRU/RNN node with sequence_lens per layer), run by
    ONNX Runtime with torch's thread count; checked against nn + packing like every column."""
    try:
        import onnxruntime
        import onnxscript  # noqa: F401  (torch's exporter needs it)
    except ImportError:
        return {}

    class Call(nn.Module):
        def __init__(self, rnn):
            super().__init__()
            self.rnn = rnn

        def forward(self, x, lengths):
            out, state = self.rnn(x, lengths=lengths)
            return (out,) + (tuple(state) if isinstance(state, tuple) else (state,))

    import io
    import warnings
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        buffer = io.BytesIO()
        program = torch.onnx.export(Call(ours).eval(), (x.detach(), lengths), dynamo=True, verbose=False)
        program.save(buffer)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = onnxruntime.InferenceSession(buffer.getvalue(), options)
    names = [i.name for i in session.get_inputs()]
    feed = dict(zip(names, (x.detach().numpy(), lengths.numpy())))

    def run():
        out, *states = (torch.from_numpy(a) for a in session.run(None, feed))
        return out, states, None
    return {"onnxruntime": run}


class _TF32:
    """cuDNN's TF32 switch set to `allow` (a user's default: on); the matmul switch off, as a user's
    default is, so the cuBLAS products inside packedrnn's ops stay fp32 when they are timed. (Until
    2026-11-26 both switches followed `allow`: the fp32 GPU rows timed those products in TF32.)"""

    def __init__(self, allow: bool):
        self.allow = allow

    def __enter__(self):
        self.saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
        torch.backends.cudnn.allow_tf32 = self.allow
        torch.backends.cuda.matmul.allow_tf32 = False

    def __exit__(self, *exc):
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = self.saved


# ---------------------------------------------------------------------------------------------
# Correctness gate

TOLERANCES = {  # docs/ARCHITECTURE.md, "Tolerances": relative to scale at benchmark shapes
    torch.float64: {"out": 1e-10, "input_grad": 1e-10, "weight_grad": 1e-10},
    torch.float32: {"out": 1e-5, "input_grad": 1e-5, "weight_grad": 2e-4},
}


def _rel(a, b) -> float:
    scale = b.abs().max().item()
    return (a.double() - b.double()).abs().max().item() / max(scale, 1e-30)


def _errors(got, want, train) -> Dict[str, float]:
    out, states, grads = got
    out2, states2, grads2 = want
    errs = {"out": max([_rel(out, out2)] + [_rel(a, b) for a, b in zip(states, states2)])}
    if train:
        errs["input_grad"] = _rel(grads[0], grads2[0])
        errs["weight_grad"] = max(_rel(a, b) for a, b in zip(grads[1:], grads2[1:]))
    return errs


def expected(case: Case, theirs, x, lengths, dtype) -> Dict[str, object]:
    """What a runner's results are checked against (verdict), computed once per case with TF32
    off. fp32/fp64: torch's packed path in the same dtype. bf16/fp16: an fp64 run, and the error
    torch itself makes in that dtype."""
    with _TF32(False):
        if dtype in TOLERANCES:
            return {"want": _compute(theirs, x, lengths, "packed", case.train), "dtype": dtype}
        ref = _torch_model(case, x.device, torch.float64)
        ref.load_state_dict({k: v.double() for k, v in theirs.state_dict().items()})
        x64 = x.detach().double().requires_grad_(case.train)
        exact = _compute(ref, x64, lengths, "packed", case.train)
        lowp = _compute(theirs, x, lengths, "packed", case.train)
        return {"want": exact, "dtype": dtype, "torch_errors": _errors(lowp, exact, case.train)}


def verdict(case: Case, run: Callable[[], tuple], ref: Dict[str, object]) -> Dict[str, object]:
    """Run `run` (TF32 off) and judge its (output, states, grads): fp32/fp64 within docs/ARCHITECTURE.md's
    tolerances of torch; bf16/fp16 at most 2x (+1e-6) the error torch makes in that dtype."""
    with _TF32(False):
        errs = _errors(run(), ref["want"], case.train)
    if "torch_errors" in ref:
        bound = {k: 2 * v + 1e-6 for k, v in ref["torch_errors"].items()}
        result = {"errors": errs, "torch_errors": ref["torch_errors"]}
    else:
        bound = TOLERANCES[ref["dtype"]]
        result = {"errors": errs}
    bad = sorted(k for k, v in errs.items() if not v <= bound[k])
    return {**result, "ok": not bad, "failed": bad}


# ---------------------------------------------------------------------------------------------
# Timing


def _time(fn: Callable[[], object], device, warmup: int, repeat: int, budget_s: float) -> Dict[str, float]:
    """Median milliseconds of `repeat` runs after `warmup` (CUDA events on a GPU), and peak memory."""
    cuda = device.type == "cuda"
    for _ in range(warmup):
        fn()
    if cuda:
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    times = []
    start_all = time.perf_counter()
    for i in range(repeat):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
        if i >= 2 and time.perf_counter() - start_all > budget_s:
            break
    median = statistics.median(times)
    # The spread of the repeats (interquartile range over the median): a shared machine's noise.
    q = statistics.quantiles(times, n=4) if len(times) >= 4 else [min(times), 0, max(times)]
    result = {"ms": median, "runs": len(times), "spread": (q[2] - q[0]) / median if median else 0.0}
    if cuda:
        result["peak_mb"] = (torch.cuda.max_memory_allocated() - base) / 2**20
    return result


def _matmul_rate(device, dtype) -> float:
    """Measured FLOP/s of a large matrix product in `dtype` on `device` (the floor's denominator)."""
    n = 4096 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    fn = lambda: a @ a  # noqa: E731
    ms = _time(fn, device, warmup=2, repeat=5, budget_s=5.0)["ms"]
    return 2 * n ** 3 / (ms / 1e3)


BARRIER_US = 0.97  # one grid-wide barrier on an H200 (anchors): the per-step floor of a recurrence


def floor_ms(case: Case, lengths: torch.Tensor, rate: float, device) -> float:
    """max(useful FLOPs / measured matmul rate, max(lengths) * steps * barrier) in ms."""
    D = 2 if case.bidir else 1
    G = packedrnn.cells.get(case.cell).gates * case.H
    tokens = int(lengths.sum())
    flops = 0.0
    for layer in range(case.layers):
        I = case.input_size if layer == 0 else D * case.H
        flops += D * 2 * tokens * G * (I + case.H)
    flops *= 3 if case.train else 1
    compute = flops / rate * 1e3
    barrier = 0.0
    if device.type == "cuda":
        barrier = int(lengths.max()) * case.layers * (2 if case.train else 1) * BARRIER_US / 1e3
    return max(compute, barrier)


# ---------------------------------------------------------------------------------------------
# One case


def our_backends(device) -> List[str]:
    """The compiled backend of `device`; the pure-PyTorch reference only where there is none (it is
    slow by design: `--backends cpu,reference` times it too)."""
    names = [name for name in ("cuda", "cpu") if name == device.type and packedrnn.ops.available(name)]
    return names or ["reference"]


def run_case(case: Case, device, *, warmup: int, repeat: int, budget_s: float,
             backends: Optional[List[str]] = None, rate: Optional[float] = None,
             extra_runners: Optional[Dict[str, Callable]] = None, baselines: bool = True) -> Dict[str, object]:
    dtype = DTYPES[case.dtype]
    ours, theirs = _models(case, device, dtype)
    lengths, x = case.lengths(), case.input(device)
    row = {"case": asdict(case), "label": case.label(), "fill": lengths.sum().item() / (case.B * case.T),
           "steps": int(lengths.max()), "results": {}, "checks": {}}
    backends = backends or our_backends(device)
    cuda = device.type == "cuda"

    runners = {f"packedrnn:{b}": (lambda b=b: _compute(ours, x, lengths, "ours", case.train, b)) for b in backends}
    for name, make in (extra_runners or {}).items():  # tests inject deliberately wrong backends
        runners[name] = make(ours, x, lengths, case)
    ref = expected(case, theirs, x, lengths, dtype)

    def check_then_time(name, fn):
        row["checks"][name] = verdict(case, fn, ref)
        if not row["checks"][name]["ok"]:
            row["results"][name] = {"wrong": True}
            return
        with _TF32(True):  # the user's default: cuDNN may use TF32; our fp32 stays fp32
            row["results"][name] = _time(fn, device, warmup, repeat, budget_s)

    for name, fn in runners.items():
        check_then_time(name, fn)

    tf32_modes = ((True, False) if cuda else (None,)) if baselines else ()
    for allow in tf32_modes:
        suffix = "" if allow in (None, True) else " tf32-off"
        for kind in ("packed", "padded"):
            fn = lambda kind=kind: _compute(theirs, x, lengths, kind, case.train)  # noqa: E731
            # torch's paths are the slow ones on a CPU: fewer repeats and a shorter budget there
            # keep the cpu suite near a minute on two cores.
            few = (max(5, repeat // 2), budget_s / 4) if not cuda else (repeat, budget_s)
            if allow is None:
                row["results"][kind] = _time(fn, device, warmup, *few)
            else:
                with _TF32(allow):
                    row["results"][kind + suffix] = _time(fn, device, warmup, *few)

    if baselines and not case.train and not cuda:
        # Last, after torch's paths: ONNX Runtime's threads keep spinning a while after each run.
        for name, fn in _onnxruntime_runner(ours, x, lengths).items():
            check_then_time(name, fn)

    best = default_backend(device, dtype)
    mine = row["results"].get(f"packedrnn:{best}", {})
    row["primary"] = f"packedrnn:{best}"
    if "ms" in mine:
        if baselines:
            row["speedup_vs_packed"] = row["results"]["packed"]["ms"] / mine["ms"]
            row["speedup_vs_padded"] = row["results"]["padded"]["ms"] / mine["ms"]
        if "ms" in row["results"].get("onnxruntime", {}):
            row["speedup_vs_onnxruntime"] = row["results"]["onnxruntime"]["ms"] / mine["ms"]
        if rate:
            row["floor_ms"] = floor_ms(case, lengths, rate, device)
            row["vs_floor"] = mine["ms"] / row["floor_ms"]
    return row


# ---------------------------------------------------------------------------------------------
# Reporting


def machine(device) -> Dict[str, object]:
    info = {"python": platform.python_version(), "torch": torch.__version__,
            "packedrnn": packedrnn.__version__, "threads": torch.get_num_threads(),
            "platform": platform.platform(), "processor": platform.processor() or platform.machine()}
    if device.type == "cuda":
        info.update(device=torch.cuda.get_device_name(device), cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version())
    else:
        info["device"] = "cpu"
        try:
            with open("/proc/cpuinfo") as f:
                names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
            info["cpu"] = names[0] if names else platform.processor()
        except OSError:
            pass
    return info


def table(rows: List[Dict[str, object]]) -> str:
    names = []
    for r in rows:
        for k in r["results"]:
            if k not in names:
                names.append(k)
    head = ["case", "fill"] + [f"{n} ms" for n in names] + ["x packed", "x padded", "x ort", "us/step",
                                                             "max rel err", "vs floor", "spread"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["label"], f"{r['fill']:.2f}"]
        for n in names:
            res = r["results"].get(n)
            cells.append("WRONG" if res and res.get("wrong") else (f"{res['ms']:.2f}" if res else ""))
        cells.append(f"{r['speedup_vs_packed']:.2f}" if "speedup_vs_packed" in r else "")
        cells.append(f"{r['speedup_vs_padded']:.2f}" if "speedup_vs_padded" in r else "")
        cells.append(f"{r['speedup_vs_onnxruntime']:.2f}" if "speedup_vs_onnxruntime" in r else "")
        mine = r["results"].get(r.get("primary"), {})
        cells.append(f"{mine['ms'] * 1e3 / max(1, r['steps']):.2f}" if "ms" in mine else "")
        primary = r["checks"].get(r.get("primary"), {})
        errs = primary.get("errors", {})
        cells.append(f"{max(errs.values()):.1e}" if errs else "")
        cells.append(f"{r['vs_floor']:.1f}" if "vs_floor" in r else "")
        cells.append(f"{spread(r):.0%}" + (" NOISY" if spread(r) > NOISY else ""))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


NOISY = 0.5  # a row whose repeats spread more than this (IQR / median) is flagged: quiet runs here
# spread 5-33%, runs beside another busy process 200-600% (RESULTS.md, 2026-12-07)


def spread(row) -> float:
    """The largest spread of a row's timings (see _time)."""
    return max((res.get("spread", 0.0) for res in row["results"].values() if "ms" in res), default=0.0)

COLUMNS = """Columns: fill = real steps / (B x T), the share of the padded batch that is work. <name> ms =
median milliseconds of a forward (fwd) or a forward and backward of out.sum() (train);
packed = nn + pack_padded_sequence, padded = nn on the padded batch (does all the padded work, and
its states are wrong for short rows: a speed reference only), onnxruntime = the model exported to
ONNX (native LSTM/GRU/RNN nodes with sequence_lens) run by ONNX Runtime, fwd rows on a CPU.
x packed / x padded / x ort = how many times faster packedrnn is than that column (> 1: faster).
us/step = packedrnn's time / max(lengths), per layer and direction together. max rel err =
packedrnn's largest difference from nn + packing, relative to scale (checked before timing).
vs floor = packedrnn's time / the floor: max(useful FLOPs / this machine's measured matrix-product
rate, on a GPU one grid barrier per step) - 1.0 would be the product work alone. spread = the
largest interquartile range / median of the row's timings; over 50% is flagged NOISY (a shared or
busy machine): rerun before trusting that row."""


def chart(rows: List[Dict[str, object]], path: str, title: str) -> Optional[str]:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install 'packedrnn[bench]'): no chart", file=sys.stderr)
        return None
    rows = [r for r in rows if "speedup_vs_packed" in r]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(10, 0.5 * len(rows) + 1.8))
    ys = range(len(rows))
    for offset, key, label in ((0.2, "speedup_vs_packed", "vs nn + pack_padded_sequence"),
                               (-0.2, "speedup_vs_padded", "vs nn on the padded batch")):
        values = [r[key] for r in rows]
        # Each bar runs from 1x to its value (leftwards when slower), on a log axis: 0.38x is small.
        bars = ax.barh([y + offset for y in ys], [v - 1 for v in values], 0.4, left=1, label=label)
        for bar, v in zip(bars, values):
            ax.text(v * (1.03 if v >= 1 else 0.97), bar.get_y() + bar.get_height() / 2, f"{v:.2f}x",
                    va="center", ha="left" if v >= 1 else "right", fontsize=7)
    ax.axvline(1.0, color="black", linewidth=0.8)
    every = [r[k] for r in rows for k in ("speedup_vs_packed", "speedup_vs_padded")] + [1.0]
    ax.set_xlim(min(every) / 1.6, max(every) * 1.6)  # room for the labels on both sides
    ax.set_yticks(list(ys))
    ax.set_yticklabels([r["label"] for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log", base=2)
    ax.set_xlabel("speedup of packedrnn (higher is better; 1 = same speed)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.09 - 0.6 / (len(rows) + 3)), ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _progress(items, desc):
    try:
        from tqdm import tqdm
        return tqdm(items, desc=desc, file=sys.stderr)
    except ImportError:
        return items


EPILOG = """suites: smoke (seconds, a check that it runs), cpu (the default without a GPU; about a
minute on a 2-core machine), gpu (the default with CUDA), steps (per-step latency at B=8).

examples:
  python -m packedrnn.bench
  python -m packedrnn.bench --suite smoke
  python -m packedrnn.bench --case cell=GRU,B=32,T=300,H=256,layers=2,bidir=1,train=1
  python -m packedrnn.bench --suite cpu --backends cpu,reference     # the pure-PyTorch reference too
  python -m packedrnn.bench --repeat 15 --warmup 3 --out my_run        # steadier medians

Every packedrnn result is first checked against nn + pack_padded_sequence (WRONG rows are not
timed). The columns are explained under the table."""


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m packedrnn.bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    p.add_argument("--suite", choices=sorted(SUITES), help="default: gpu with CUDA, else cpu")
    p.add_argument("--case", action="append", default=[], help="a custom case (repeatable), e.g. "
                   "cell=GRU,B=32,T=300,H=256,I=128,layers=2,bidir=1,dtype=fp32,train=1,lo=0.25")
    p.add_argument("--device", help="cuda or cpu (default: cuda when available)")
    p.add_argument("--backends", help="comma-separated packedrnn backends (default: all available)")
    p.add_argument("--repeat", type=int, help="timed runs per backend (median; default 15 GPU, 7 CPU)")
    p.add_argument("--warmup", type=int, default=None, help="untimed runs first (default 3 GPU, 1 CPU)")
    p.add_argument("--budget", type=float, default=20.0, help="seconds of timed runs per backend at most")
    p.add_argument("--out", default="bench_out", help="folder for results.json and speedup.png")
    p.add_argument("--ours-only", action="store_true", help="time packedrnn only (still checked against nn + "
                   "packing): an A/B of a switch beside a full run of the same session")
    args = p.parse_args(argv)

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cases = [parse_case(c) for c in args.case] or SUITES[args.suite or ("gpu" if device.type == "cuda" else "cpu")]
    cuda = device.type == "cuda"
    repeat = args.repeat or (15 if cuda else 7)
    warmup = args.warmup if args.warmup is not None else (3 if cuda else 1)
    backends = args.backends.split(",") if args.backends else None
    suite_name = "custom" if args.case else (args.suite or ("gpu" if cuda else "cpu"))

    info = machine(device)
    rates = {}
    rows = []
    for case in _progress(cases, f"packedrnn.bench {suite_name}"):
        dtype = DTYPES[case.dtype]
        if dtype not in rates:
            rates[dtype] = _matmul_rate(device, dtype)
        rows.append(run_case(case, device, warmup=warmup, repeat=repeat, budget_s=args.budget,
                             backends=backends, rate=rates[dtype], baselines=not args.ours_only))
    # The matrix-product rate again at the end: a machine that got busy during the run shows here.
    drift = {str(k): _matmul_rate(device, k) / v for k, v in rates.items()}

    os.makedirs(args.out, exist_ok=True)
    title = (f"packedrnn {suite_name} suite on {info.get('device')}{' / ' + info['cpu'] if 'cpu' in info else ''}, "
             f"torch {info['torch']}, {info['threads']} threads, {time.strftime('%Y-%m-%d')}")
    print(f"\n{title}, median ms\n")
    print(table(rows))
    print("\n" + COLUMNS)
    speedups = [r["speedup_vs_packed"] for r in rows if "speedup_vs_packed" in r]
    gm = None
    if speedups:
        gm = math.exp(sum(math.log(s) for s in speedups) / len(speedups))
        print(f"\ngeometric-mean speedup vs packed: {gm:.2f}x over {len(speedups)} rows")
    noisy = [r["label"] for r in rows if spread(r) > NOISY]
    slower = {k: v for k, v in drift.items() if v < 0.7 or v > 1 / 0.7}
    if noisy or slower:
        print(f"\nNOISY RUN: {len(noisy)} row(s) spread over {NOISY:.0%}" +
              (f"; the matrix-product rate moved by {', '.join(f'{v:.2f}x ({k})' for k, v in slower.items())} "
               "between the start and the end" if slower else "") +
              ". Another process is probably using the machine: rerun before trusting these figures.")
    wrong = [r["label"] for r in rows if any(not c["ok"] for c in r["checks"].values())]
    for label in wrong:
        print(f"WRONG: {label} (a backend disagrees with nn + pack_padded_sequence; see results.json)")
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({"suite": suite_name, "date": time.strftime("%Y-%m-%d"), "machine": info,
                   "matmul_flops": {str(k): v for k, v in rates.items()}, "matmul_drift": drift, "rows": rows},
                  f, indent=1)
    png = chart(rows, os.path.join(args.out, "speedup.png"),
                title + (f"\ngeometric mean vs nn + packing {gm:.2f}x" if gm else ""))
    print(f"\nwrote {os.path.join(args.out, 'results.json')}" + (f" and {png}" if png else ""))
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
