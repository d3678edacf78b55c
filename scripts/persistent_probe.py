"""Developer probe of the persistent CUDA kernels (scripts/gpu_check.sh runs it first, under a
timeout, so a hang shows up as the last case printed):
  1. agreement: the persistent kernels, forced (PACKEDRNN_PERSISTENT=force), against the per-step
     kernels on the same inputs, forward and backward, for sizes that cover 1..16 units per block,
     several chunks of rows, and 16-byte-unaligned rows; relative max error per result;
  2. latency (--latency): microseconds per step of one layer, forward and forward + backward, as the
     batch grows (B=1 is the floor of a step), with both forward exchanges (PACKEDRNN_XCH), and the
     split of each kernel's step into phases (PACKEDRNN_TIMING=1); then the experiments: h exchanged
     inside a cluster (PACKEDRNN_XCH=cluster), staging by bulk copies (PACKEDRNN_STAGE=bulk), two
     rows of W_hh per thread (PACKEDRNN_TILE=2), the per-step kernels with cuBLAS products
     (PACKEDRNN_PERSISTENT=gemm), the fp32 products around the recurrence as six bf16 products
     (PACKEDRNN_GEMM=bf16x6). (The backward's two forms and the projection against
     the per-step kernels were measured and decided: RESULTS.md, fourth session.)
Prints as it goes; CUDA events, median of 5."""
import os
import statistics
import sys

import torch

import packedrnn

os.environ["PACKEDRNN_BACKEND"] = "cuda"
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


def results(m, x, lengths, mode):
    os.environ["PACKEDRNN_PERSISTENT"] = mode
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
        a = results(m, x, lengths, "force")
        b = results(m, x, lengths, "0")
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


def latency(configs):
    """us per step of one layer, all rows T long; then one more run of each with PACKEDRNN_TIMING=1,
    where block 0 of each kernel prints how its time per step splits (stage, product, cell, barrier)."""
    os.environ["PACKEDRNN_PERSISTENT"] = "force"
    T = 500
    for cell, H, dt, bi, B in configs:
        for xch in ("tagged", "barrier"):
            os.environ["PACKEDRNN_XCH"] = xch
            m = build(cell, H, H, bi, DT[dt])
            x, lengths = inputs(m, B, T, lo=1.0)  # every row T long: steps = T

            def fwd():
                with torch.no_grad():
                    m(x, lengths=lengths)

            def train():
                out, _ = m(x, lengths=lengths)
                out.float().sum().backward()
            f, tr = time_ms(fwd), time_ms(train)
            print(f"latency {cell} H={H} {'bi ' if bi else ''}{dt} B={B} T={T} forward exchange {xch}: "
                  f"fwd {f * 1e3 / T:.2f} us/step, fwd+bwd {tr * 1e3 / T:.2f} us/step", flush=True)
            os.environ["PACKEDRNN_TIMING"] = "1"
            train()
            torch.cuda.synchronize()
            os.environ["PACKEDRNN_TIMING"] = "0"
    os.environ.pop("PACKEDRNN_XCH", None)


CONFIGS = [("LSTM", 512, "fp32", False, B) for B in (1, 8, 64, 256)] + \
    [("LSTM", 512, "bf16", False, 64), ("LSTM", 1024, "fp32", False, 256), ("GRU", 512, "fp32", True, 64)]


def experiment_latency():
    """us per step of one layer, all rows T long, for the two experiments and their combination,
    alternately, twice each: staging by cp.async (default) or by bulk copies (PACKEDRNN_STAGE=bulk,
    sm_90), and one or two rows of W_hh per thread in the FFMA product (PACKEDRNN_TILE=2, fp32).
    The forward exchanges through the barrier and the backward is the staged form (which stages);
    fp32 rows also with the reduce form (which does not). Then one run with both experiments on
    and PACKEDRNN_TIMING=1 (the phase split)."""
    os.environ.update(PACKEDRNN_PERSISTENT="force", PACKEDRNN_XCH="barrier")
    T = 300
    for cell, H, B, dt in [("LSTM", 512, 64, "fp32"), ("LSTM", 512, 256, "fp32"), ("LSTM", 1024, 256, "fp32"),
                           ("LSTM", 512, 64, "bf16"), ("LSTM", 1024, 256, "bf16"), ("GRU", 512, 64, "fp32")]:
        m = build(cell, H, H, False, DT[dt])
        x, lengths = inputs(m, B, T, lo=1.0)

        def train():
            out, _ = m(x, lengths=lengths)
            out.float().sum().backward()
        modes = [("", ""), ("bulk", ""), ("", "2"), ("bulk", "2")] if dt == "fp32" else [("", ""), ("bulk", "")]
        times = {mode: [] for mode in modes}
        os.environ["PACKEDRNN_BWD"] = "staged"
        for mode in modes * 2:
            os.environ.update(PACKEDRNN_STAGE=mode[0], PACKEDRNN_TILE=mode[1])
            with torch.no_grad():
                f = time_ms(lambda: m(x, lengths=lengths))
            times[mode].append((f, time_ms(train)))
        us = {mode: [statistics.mean(t[i] for t in ts) * 1e3 / T for i in (0, 1)] for mode, ts in times.items()}
        line = [f"{stage or 'cp.async'}{' tile 2' if tile else ''} fwd {f:.2f} fwd+bwd {tr:.2f}"
                for (stage, tile), (f, tr) in us.items()]
        if dt == "fp32":
            os.environ.update(PACKEDRNN_BWD="reduce", PACKEDRNN_STAGE="", PACKEDRNN_TILE="")
            line.append(f"reduce form fwd+bwd {time_ms(train) * 1e3 / T:.2f}")
        print(f"latency {cell} H={H} {dt} B={B} T={T} us/step: " + ", ".join(line), flush=True)
        os.environ.update(PACKEDRNN_BWD="staged", PACKEDRNN_STAGE="bulk", PACKEDRNN_TILE="2", PACKEDRNN_TIMING="1")
        train()
        torch.cuda.synchronize()
        os.environ.update(PACKEDRNN_TIMING="0")
    for k in ("PACKEDRNN_XCH", "PACKEDRNN_BWD", "PACKEDRNN_STAGE", "PACKEDRNN_TILE"):
        os.environ.pop(k)


def cluster_latency():
    """us per step of one layer, all rows T long, h and the gate gradients exchanged through L2 (the
    default) or inside a cluster (PACKEDRNN_XCH=cluster, sm_90), the forward with a cluster barrier
    per step or by st.async (=cluster_async), alternately, twice each. Then one run of each cluster
    form with PACKEDRNN_TIMING=1 (the phase split: "barrier" is the cluster barrier, or the wait for
    the st.async bytes is in "stage")."""
    os.environ["PACKEDRNN_PERSISTENT"] = "force"
    T = 500
    for cell, H, B, dt in [("LSTM", 512, 8, "bf16"), ("LSTM", 512, 8, "fp16"), ("LSTM", 512, 16, "bf16"),
                           ("GRU", 512, 8, "bf16"), ("LSTM", 256, 8, "bf16"), ("LSTM", 128, 32, "fp32"),
                           ("GRU", 128, 32, "fp32"), ("LSTM", 128, 8, "fp32")]:
        m = build(cell, H, H, False, DT[dt])
        x, lengths = inputs(m, B, T, lo=1.0)

        def train():
            out, _ = m(x, lengths=lengths)
            out.float().sum().backward()
        times = {"L2": [], "cluster": [], "cluster_async": []}
        for xch in list(times) * 2:
            os.environ["PACKEDRNN_XCH"] = "" if xch == "L2" else xch
            with torch.no_grad():
                f = time_ms(lambda: m(x, lengths=lengths))
            times[xch].append((f, time_ms(train)))
        line = [f"{xch} fwd {statistics.mean(t[0] for t in ts) * 1e3 / T:.2f} "
                f"fwd+bwd {statistics.mean(t[1] for t in ts) * 1e3 / T:.2f}" for xch, ts in times.items()]
        print(f"latency {cell} H={H} {dt} B={B} T={T} us/step: " + ", ".join(line), flush=True)
        for xch in ("cluster", "cluster_async"):
            os.environ.update(PACKEDRNN_XCH=xch, PACKEDRNN_TIMING="1")
            with torch.no_grad():
                m(x, lengths=lengths)
            torch.cuda.synchronize()
            os.environ["PACKEDRNN_TIMING"] = "0"
    os.environ.pop("PACKEDRNN_XCH")


def step_products_latency():
    """us per step of one layer, all rows T long: the persistent kernels (where they fit) against
    the per-step kernels with cuBLAS products (PACKEDRNN_PERSISTENT=gemm), alternately, twice
    each. Large batches are where the persistent kernels' own products fall behind cuBLAS's."""
    T = 200
    for cell, H, dt, bi, B in [("LSTM", 1024, "fp32", False, 256), ("LSTM", 1024, "bf16", False, 256),
                               ("LSTM", 512, "fp32", False, 256), ("LSTM", 512, "bf16", True, 64),
                               ("GRU", 512, "fp32", True, 64), ("LSTM", 256, "fp32", False, 64)]:
        m = build(cell, H, H, bi, DT[dt])
        x, lengths = inputs(m, B, T, lo=1.0)

        def train():
            out, _ = m(x, lengths=lengths)
            out.float().sum().backward()
        times = {"persistent": [], "gemm": []} | ({"gemm bf16x6": []} if dt == "fp32" else {})
        for mode in list(times) * 2:
            os.environ["PACKEDRNN_PERSISTENT"] = "1" if mode == "persistent" else "gemm"
            os.environ["PACKEDRNN_GEMM"] = "bf16x6" if "bf16x6" in mode else ""
            with torch.no_grad():
                f = time_ms(lambda: m(x, lengths=lengths))
            times[mode].append((f, time_ms(train)))
        line = [f"{k} fwd {statistics.mean(t[0] for t in v) * 1e3 / T:.2f} "
                f"fwd+bwd {statistics.mean(t[1] for t in v) * 1e3 / T:.2f}" for k, v in times.items()]
        print(f"step products {cell} H={H} {'bi ' if bi else ''}{dt} B={B} T={T} us/step: " + ", ".join(line),
              flush=True)
    os.environ.update(PACKEDRNN_PERSISTENT="1", PACKEDRNN_GEMM="")


def gemm_latency():
    """fp32 training of the GPU suite's fp32 layers with the products around the recurrence in fp32
    or as six bf16 tensor-core products (PACKEDRNN_GEMM=bf16x6, csrc/layer_gemms.h), lengths on
    the CPU with PACKEDRNN_TOKENS=1 (so the products skip the padding), alternately, twice each, ms
    per fwd+bwd; then each form's largest error against fp64 (on the GPU; T cut to 40, relative to
    the largest value of each result)."""
    os.environ.update(PACKEDRNN_PERSISTENT="1", PACKEDRNN_TOKENS="1")
    for cell, H, bi, B, T, lo in [("LSTM", 256, False, 64, 100, 0.1), ("LSTM", 512, True, 64, 500, 0.25),
                                  ("GRU", 512, True, 64, 500, 0.25), ("LSTM", 1024, False, 256, 200, 0.25)]:
        m = build(cell, H, H, bi, torch.float32)
        x, lengths = inputs(m, B, T, lo=lo)

        def train():
            out, _ = m(x, lengths=lengths)
            out.sum().backward()
        times = {"fp32": [], "bf16x6": []}
        for mode in list(times) * 2:
            os.environ["PACKEDRNN_GEMM"] = mode
            times[mode].append(time_ms(train))
        m64 = build(cell, H, H, bi, torch.float64)
        m64.load_state_dict(m.state_dict())
        x64, short = x.detach()[:, :40].double().requires_grad_(True), lengths.clamp(max=40)
        ref = results(m64, x64, short, "1")
        errs = {}
        for mode in times:
            os.environ["PACKEDRNN_GEMM"] = mode
            got = results(m, x64.detach().float().requires_grad_(True), short, "1")
            errs[mode] = max(((a.double() - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()
                             for a, b in zip(got, ref))
        print(f"products {cell} H={H} {'bi ' if bi else ''}B={B} T={T} fp32 train ms: " +
              ", ".join(f"{k} {statistics.mean(v):.2f} (max rel err {errs[k]:.1e})" for k, v in times.items()),
              flush=True)
    for k in ("PACKEDRNN_GEMM", "PACKEDRNN_TOKENS"):
        os.environ.pop(k)


if __name__ == "__main__":
    w = agreement()
    print(f"worst fp32 relative disagreement: {w:.2e}", flush=True)
    if "--latency" in sys.argv:
        latency(CONFIGS)
        experiment_latency()
        step_products_latency()
        gemm_latency()
        cluster_latency()  # last: never run on a GPU yet, so a hang there costs nothing else
    sys.exit(0 if w < 1e-4 else 1)
