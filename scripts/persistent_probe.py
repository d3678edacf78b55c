"""Developer probe of the persistent CUDA kernels (scripts/gpu_check.sh runs it first, under a
timeout, so a hang shows up as the last case printed):
  1. agreement: the persistent kernels, forced (recurrence "persistent"), against the per-step
     kernels on the same inputs, forward and backward, for sizes that cover 1..16 units per block,
     several chunks of rows, and 16-byte-unaligned rows; relative max error per result;
  2. latency (--latency): microseconds per step of one layer, forward and forward + backward, as the
     batch grows (B=1 is the floor of a step), with both forward exchanges, and the split of each
     kernel's step into phases (printed by a build with the phase clock compiled in:
     NVCC_APPEND_FLAGS=-DPACKEDRNN_TIMING); then the persistent kernels
     against the per-step kernels with cuBLAS products (recurrence "gemm") around the size
     where fp32 changes over, and a profile of the per-step path (host enqueue time, heaviest
     kernels and host ops). (Decided and gone from here: the backward's two forms and the
     projection, RESULTS.md fourth session; staging by bulk copies, two rows of W_hh per thread, the
     cluster exchange and bf16x6 products, RESULTS.md 2026-11-26.)
Prints as it goes; CUDA events, median of 5. Every path is chosen with packedrnn.tuning."""
import statistics
import sys

import torch

import packedrnn

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
DT = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def build(cell, I, H, bi, dtype, **kw):
    cls = packedrnn.PackedLSTM if cell == "LSTM" else packedrnn.PackedGRU
    torch.manual_seed(0)
    return cls(I, H, bidirectional=bi, batch_first=True, device="cuda", dtype=dtype, **kw)


def inputs(m, B, T, lo=0.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(int(lo * T), T + 1, (B,), generator=g)
    lengths[0] = T
    x = torch.randn(B, T, m.input_size, generator=g).to("cuda", next(m.parameters()).dtype)
    return x.requires_grad_(True), lengths


def results(m, x, lengths, recurrence):
    with packedrnn.tuning(backend="cuda", recurrence=recurrence):
        out, state = m(x, lengths=lengths)
    states = list(state) if isinstance(state, tuple) else [state]
    loss = sum((t.float() * torch.linspace(-1, 1, t.numel(), device="cuda").view(t.shape)).sum()
               for t in [out] + states)
    gs = torch.autograd.grad(loss, [x] + list(m.parameters()))
    return [out] + states + list(gs)


def agreement():
    cases = [  # cell, I, H, B, T, bidirectional, dtype, proj_size
        ("LSTM", 8, 16, 5, 7, False, "fp32", 0),
        ("GRU", 8, 16, 5, 7, True, "fp32", 0),
        ("LSTM", 8, 16, 5, 7, True, "fp32", 6),
        ("LSTM", 64, 512, 8, 40, False, "fp32", 0),
        ("LSTM", 32, 500, 150, 12, True, "fp32", 0),
        ("LSTM", 32, 500, 70, 12, True, "fp32", 250),
        ("GRU", 40, 300, 40, 15, False, "fp32", 0),
        ("GRU", 24, 250, 70, 9, True, "fp32", 0),
        ("LSTM", 16, 130, 33, 20, False, "fp32", 0),
        ("LSTM", 16, 130, 33, 20, False, "fp32", 20),
        ("LSTM", 64, 512, 64, 20, True, "bf16", 0),
        ("LSTM", 64, 512, 64, 20, True, "bf16", 128),
        ("LSTM", 32, 1024, 40, 8, True, "bf16", 0),  # 16 units per block
        ("GRU", 64, 256, 33, 20, False, "fp16", 0),
        ("LSTM", 128, 1024, 256, 6, False, "fp32", 0),
    ]
    worst = 0.0
    for cell, I, H, B, T, bi, dt, proj in cases:
        m = build(cell, I, H, bi, DT[dt], **({"proj_size": proj} if proj else {}))
        x, lengths = inputs(m, B, T)
        lengths[-1] = 0
        a = results(m, x, lengths, "persistent")
        b = results(m, x, lengths, "step")
        rel = [((p.float() - q.float()).abs().max() / q.float().abs().max().clamp_min(1e-30)).item()
               for p, q in zip(a, b)]
        torch.cuda.synchronize()
        worst = max(worst, max(rel)) if dt == "fp32" else worst
        print(f"agree {cell} I={I} H={H} P={proj or H} B={B} T={T} bi={bi} {dt}: max rel {max(rel):.2e} "
              f"(out {rel[0]:.1e}, grads {max(rel[len(a) - len(list(m.parameters())) - 1:]):.1e})", flush=True)
    return worst


def time_ms(fn, reps=5):
    fn()
    times = []
    for _ in range(reps):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        torch.cuda.synchronize()
        times.append(s.elapsed_time(e))
    return statistics.median(times)


def graph_ms(fn, reps=5):
    """time_ms of fn captured once in a CUDA graph and replayed: the call without its host work
    (launches, ATen layers), i.e. its GPU time including the gaps between dependent kernels."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return time_ms(graph.replay, reps)


def latency(configs):
    """us per step of one layer, all rows T long; then one more run of each, where (in a build with
    the phase clock) block 0 of each kernel prints how its time per step splits (stage, product,
    cell, barrier)."""
    T = 500
    for cell, H, dt, bi, B in configs:
        for xch in ("tagged", "barrier"):
            m = build(cell, H, H, bi, DT[dt])
            x, lengths = inputs(m, B, T, lo=1.0)  # every row T long: steps = T

            def fwd():
                with torch.no_grad():
                    m(x, lengths=lengths)

            def train():
                out, _ = m(x, lengths=lengths)
                out.float().sum().backward()
            with packedrnn.tuning(backend="cuda", recurrence=f"persistent:{xch}"):
                f, tr = time_ms(fwd), time_ms(train)
                print(f"latency {cell} H={H} {'bi ' if bi else ''}{dt} B={B} T={T} forward exchange {xch}: "
                      f"fwd {f * 1e3 / T:.2f} us/step, fwd+bwd {tr * 1e3 / T:.2f} us/step", flush=True)
                train()
                torch.cuda.synchronize()


CONFIGS = [("LSTM", 512, "fp32", False, B) for B in (1, 8, 64, 256)] + \
    [("LSTM", 512, "bf16", False, 64), ("LSTM", 1024, "fp32", False, 256), ("GRU", 512, "fp32", True, 64)]


def step_products_latency():
    """us per step of one layer: the persistent kernels (forced) against the per-step kernels with
    cuBLAS products (recurrence "gemm", the default for one-direction fp32 layers with
    B * H >= 192 * 512), alternately, twice each; where lengths vary, also with the lengths passed
    to the op on the host (tokens=1: the products then stop at the rows still active; the default
    for fp32 layers where it skips >= 10 GFLOP, packedrnn.plan.GATHER_FLOPS). Around that
    threshold, bidirectional layers (whose crossover is not measured yet), and a half type at the
    largest batch."""
    T = 200
    for cell, H, dt, bi, B, lo in [("LSTM", 512, "fp32", False, 128, 1.0), ("LSTM", 512, "fp32", False, 192, 1.0),
                                   ("LSTM", 1024, "fp32", False, 96, 1.0), ("LSTM", 512, "fp32", True, 192, 1.0),
                                   ("GRU", 512, "fp32", True, 256, 1.0), ("LSTM", 1024, "fp32", False, 256, 0.25),
                                   ("LSTM", 1024, "bf16", False, 256, 0.25)]:
        m = build(cell, H, H, bi, DT[dt])
        x, lengths = inputs(m, B, T, lo=lo)

        def train():
            out, _ = m(x, lengths=lengths)
            out.float().sum().backward()
        times = {"persistent": [], "gemm": []} | ({"gemm tokens": []} if lo < 1 else {})
        for mode in list(times) * 2:
            with packedrnn.tuning(backend="cuda", recurrence=mode.split()[0], tokens="1" if "tokens" in mode else "0"):
                with torch.no_grad():
                    f = time_ms(lambda: m(x, lengths=lengths))
                times[mode].append((f, time_ms(train)))
        line = [f"{k} fwd {statistics.mean(t[0] for t in v) * 1e3 / T:.2f} "
                f"fwd+bwd {statistics.mean(t[1] for t in v) * 1e3 / T:.2f}" for k, v in times.items()]
        print(f"step products {cell} H={H} {'bi ' if bi else ''}{dt} B={B} T={T} lo={lo} us/step: " +
              ", ".join(line), flush=True)


def step_products_profile():
    """Where the per-step path's time goes (recurrence "gemm" costs ~80 us per forward step
    where its work is ~10 us): the host's enqueue time of a call (no sync) against its event time,
    then torch.profiler's heaviest GPU kernels and host ops of one fwd+bwd call. Host time close to
    event time means the host bounds it (a case for fewer host layers, fewer launches or CUDA
    graphs); otherwise the kernels do. "graph replay": the same call captured in a CUDA graph,
    whose replay has no host work: what CUDA graphs inside the op (or a user's torch.cuda.graph,
    torch.compile(mode="reduce-overhead")) would leave. (The forward's ~400 launches fit CUDA's
    launch queue, so its host time is a clean reading; fwd+bwd may fill the queue and then waits on
    the GPU.)"""
    import time
    T = 200
    for cell, H, bi, B in [("LSTM", 256, False, 64), ("GRU", 512, True, 64), ("LSTM", 1024, False, 256)]:
        m = build(cell, H, H, bi, torch.float32)
        x, lengths = inputs(m, B, T, lo=1.0)

        def train():
            with packedrnn.tuning(backend="cuda", recurrence="gemm"):
                out, _ = m(x, lengths=lengths)
                out.sum().backward()

        def forward():
            with packedrnn.tuning(backend="cuda", recurrence="gemm"), torch.no_grad():
                m(x, lengths=lengths)
        host = {"fwd": [], "fwd+bwd": []}
        for _ in range(5):
            for kind, fn in (("fwd", forward), ("fwd+bwd", train)):
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                fn()
                host[kind].append((time.perf_counter() - t0) * 1e3)
                torch.cuda.synchronize()
        f, fb = time_ms(forward), time_ms(train)
        per_step = {k: statistics.median(v) * 1e3 / T for k, v in host.items()}
        # The same calls captured in a CUDA graph (lengths on the device, grads set to None first so
        # that the captured backward writes them): what is left without the host's launches.
        lengths = lengths.cuda()
        x.grad = None
        m.zero_grad(set_to_none=True)
        try:
            graph = [f"{graph_ms(fn) * 1e3 / T:.1f}" for fn in (forward, train)]
        except RuntimeError as e:  # reported, not fatal: the rest of the probe still runs
            graph = [f"capture failed ({str(e).splitlines()[0][:80]})"] * 2
        print(f"gemm profile {cell} H={H} {'bi ' if bi else ''}B={B} T={T}: "
              f"us/step host enqueue / events / graph replay: fwd {per_step['fwd']:.1f} / {f * 1e3 / T:.1f} / "
              f"{graph[0]}, fwd+bwd {per_step['fwd+bwd']:.1f} / {fb * 1e3 / T:.1f} / {graph[1]}", flush=True)
        acts = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
        with torch.profiler.profile(activities=acts) as prof:
            train()
            torch.cuda.synchronize()
        events = prof.key_averages()
        gpu = sorted((e for e in events if e.self_device_time_total > 0), key=lambda e: -e.self_device_time_total)
        cpu = sorted((e for e in events if e.self_cpu_time_total > 0), key=lambda e: -e.self_cpu_time_total)
        for name, rows, total in (("gpu", gpu, "self_device_time_total"), ("host", cpu, "self_cpu_time_total")):
            for e in rows[:6]:
                us = getattr(e, total)
                print(f"  {name} {e.key[:70]:70s} x{e.count:5d} {us / 1e3:8.2f} ms {us / e.count:7.2f} us each",
                      flush=True)


if __name__ == "__main__":
    w = agreement()
    print(f"worst fp32 relative disagreement: {w:.2e}", flush=True)
    if "--latency" in sys.argv:
        latency(CONFIGS)
        step_products_latency()
        step_products_profile()
    sys.exit(0 if w < 1e-4 else 1)
