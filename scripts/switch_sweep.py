"""Which developer switch wins on each row of a benchmark suite, in one process on one GPU.

The rules that pick a CUDA path by size (csrc/cuda/rules.h; GATHER_FLOPS in packedrnn/plan.py)
were each set from an A/B on a few shapes. This runs every
configuration of CONFIGS on every row of the suite the issue's goals are measured on, so a single
device call shows which rule to move for which row. Each result is checked first against
nn + pack_padded_sequence (packedrnn.bench.verdict; the expected results are computed once per
row), then timed as the benchmark times it (median of CUDA events, peak memory).

    python scripts/switch_sweep.py [--suite gpu] [--configs default,gemm] [--repeat 5] [--out DIR]

Prints a table of ms per row and configuration (* the fastest; WRONG: failed the check; refused:
a forced path that does not take the call) and writes DIR/sweep.json. Each configuration is a
packedrnn.tuning block, so one process runs them all. On a machine without a GPU it runs on the
CPU, where none of the switches but tokens applies (what the tests use to keep it working).
"""
import argparse
import json
import os
import sys
import time

import torch

import packedrnn
from packedrnn import bench

CONFIGS = {  # packedrnn.tuning's switches (packedrnn/plan.py)
    "default": {},
    "tokens=0": {"tokens": "0"},  # lengths never reach the op on the host
    "tokens=1": {"tokens": "1"},  # always: products over valid tokens only
    "persistent": {"recurrence": "persistent"},
    "gemm": {"recurrence": "gemm"},  # per-step kernels, cuBLAS step products
    "gemm tokens=1": {"recurrence": "gemm", "tokens": "1"},
    "xch=tagged": {"recurrence": "persistent:tagged"},  # the forward's exchange without a grid barrier
    "xch=barrier": {"recurrence": "persistent:barrier"},
    "bwd=staged": {"recurrence": "persistent:staged"},  # the backward's two forms
    "bwd=reduce": {"recurrence": "persistent:reduce"},
}


def run_row(case, device, configs, repeat, budget_s):
    dtype = bench.DTYPES[case.dtype]
    ours, theirs = bench._models(case, device, dtype)
    lengths, x = case.lengths(), case.input(device)
    ref = bench.expected(case, theirs, x, lengths, dtype)
    backend = bench.default_backend(device, dtype)
    run = lambda: bench._compute(ours, x, lengths, "ours", case.train, backend)  # noqa: E731
    row = {"case": case.label(), "steps": int(lengths.max()), "results": {}}
    for name in configs:
        try:
            with packedrnn.tuning(**CONFIGS[name]):
                check = bench.verdict(case, run, ref)
                if check["ok"]:
                    with bench._TF32(True):  # as the benchmark times it
                        result = bench._time(run, device, 2, repeat, budget_s)
                else:
                    result = {"wrong": True}
            result["errors"] = check["errors"]
        except RuntimeError as e:  # a forced path that refuses the call
            result = {"refused": str(e).splitlines()[0][:200]}
        row["results"][name] = result
        print(f"  {case.label()} | {name}: {result.get('ms', result.get('refused', 'WRONG'))}", flush=True)
    return row


def table(rows, configs):
    lines = ["| case | " + " | ".join(configs) + " |", "|---|" + "---|" * len(configs)]
    for r in rows:
        timed = {n: v["ms"] for n, v in r["results"].items() if "ms" in v}
        best = min(timed, key=timed.get) if timed else None
        cells = []
        for n in configs:
            v = r["results"][n]
            cells.append("WRONG" if v.get("wrong") else "refused" if "refused" in v else
                         f"{v['ms']:.2f}" + ("*" if n == best else ""))
        lines.append(f"| {r['case']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--suite", default="gpu", choices=sorted(bench.SUITES))
    p.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated names of CONFIGS")
    p.add_argument("--device", help="cuda or cpu (default: cuda when available)")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--budget", type=float, default=3.0, help="seconds of timed runs per configuration at most")
    p.add_argument("--out", default="sweep_out")
    args = p.parse_args(argv)
    configs = args.configs.split(",")
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        raise SystemExit(f"--configs: unknown {unknown}; known: {', '.join(CONFIGS)}")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    rows = [run_row(case, device, configs, args.repeat, args.budget) for case in bench.SUITES[args.suite]]
    info = bench.machine(device)
    print(f"\nswitch sweep, {args.suite} suite on {info.get('device')}, median ms\n")
    print(table(rows, configs))
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "sweep.json"), "w") as f:
        json.dump({"suite": args.suite, "date": time.strftime("%Y-%m-%d"), "machine": info,
                   "configs": {n: CONFIGS[n] for n in configs}, "rows": rows}, f, indent=1)
    wrong = [(r["case"], n) for r in rows for n, v in r["results"].items() if v.get("wrong")]
    for case, name in wrong:
        print(f"WRONG: {case} with {name}")
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
