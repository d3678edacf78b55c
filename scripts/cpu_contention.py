"""A shared CPU: each cpu-suite row timed quiet, then beside a process that keeps one core busy.

    python scripts/cpu_contention.py [--threads 2] [--repeat 7] [--suite cpu]

Prints, per row, packedrnn's median milliseconds quiet and busy and their ratio (the goal: under
2.5x with two threads on two cores), and the same for nn + pack_padded_sequence as a yardstick.
Every result is checked against nn + packing first, as in packedrnn.bench.
"""
import argparse
import multiprocessing as mp
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from packedrnn import bench  # noqa: E402


def spin(stop):
    while not stop.is_set():
        pass


def measure(case, repeat):
    dtype = bench.DTYPES[case.dtype]
    ours, theirs = bench._models(case, torch.device("cpu"), dtype)
    lengths, x = case.lengths(), case.input(torch.device("cpu"))
    ref = bench.expected(case, theirs, x, lengths, dtype)
    fns = {"packedrnn": lambda: bench._compute(ours, x, lengths, "ours", case.train, "cpu"),
           "packed": lambda: bench._compute(theirs, x, lengths, "packed", case.train)}
    assert bench.verdict(case, fns["packedrnn"], ref)["ok"], case.label()
    return {name: bench._time(fn, torch.device("cpu"), 1, repeat, 60.0)["ms"] for name, fn in fns.items()}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--suite", default="cpu")
    p.add_argument("--rows", default="", help="comma-separated row numbers of the suite (default: all)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{bench.machine(torch.device('cpu'))}, {args.threads} threads, medians of {args.repeat}")
    print("| case | packedrnn quiet ms | busy ms | ratio | nn + packing quiet ms | busy ms | ratio |")
    print("|---|---|---|---|---|---|---|")
    rows = [int(r) for r in args.rows.split(",")] if args.rows else None
    for i, case in enumerate(bench.SUITES[args.suite]):
        if rows is not None and i not in rows:
            continue
        quiet = measure(case, args.repeat)
        stop = mp.Event()
        busy = mp.Process(target=spin, args=(stop,))
        busy.start()
        try:
            loaded = measure(case, args.repeat)
        finally:
            stop.set()
            busy.join()
        cells = []
        for name in ("packedrnn", "packed"):
            cells += [f"{quiet[name]:.2f}", f"{loaded[name]:.2f}", f"{loaded[name] / quiet[name]:.2f}"]
        print(f"| {case.label()} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
