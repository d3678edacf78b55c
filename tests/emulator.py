"""Builds the CPU emulator of the CUDA kernels (tests/cuda_emu/README.md) for the emulated tests:
the kernels' own source compiled with g++ against tests/cuda_emu, as a ctypes library
(test_cuda_emulated.py) or, with the CUDA op's torch glue, as the op packedrnn_emu on CPU tensors
(test_cuda_op_emulated.py)."""
import ctypes
import glob
import math
import os
import platform
import shutil
import subprocess
import sys
import sysconfig

import pytest
import torch
import torch.utils.cpp_extension

from packedrnn import ops  # registers packedrnn's schemas, which packedrnn_emu repeats

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EMU = os.path.join(ROOT, "tests", "cuda_emu")
CUDA = os.path.join(ROOT, "csrc", "cuda")
# The persistent kernels, one .cu per dtype (the reduce form's included), the per-step kernels,
# the emulator and its C entry points.
SOURCES = sorted(glob.glob(os.path.join(CUDA, "rnn_persistent_*.cu"))) + \
    [os.path.join(CUDA, "rnn_kernels.cu"), os.path.join(EMU, "emu.cpp"), os.path.join(EMU, "driver.cpp")]
FLAGS = ["g++", "-std=c++17", "-O1", "-fPIC", "-DPACKEDRNN_EMULATE", "-I" + os.path.join(EMU, "include"),
         "-I" + EMU, "-I" + os.path.join(ROOT, "csrc"), "-I" + CUDA, "-Wall", "-Wno-unknown-pragmas", "-Werror"]


def _gcc_major():
    try:
        return int(subprocess.run(["g++", "-dumpversion"], capture_output=True, text=True).stdout.split(".")[0])
    except (OSError, ValueError):
        return 0


needs_emulator = pytest.mark.skipif(
    not (sys.platform == "linux" and platform.machine() == "x86_64" and shutil.which("g++") and _gcc_major() >= 12),
    reason="the emulator needs g++ 12 or later on x86-64 Linux (ucontext fibers, _Float16)")


def _compile(jobs):
    """Runs the (command, what) pairs in parallel; fails with the compiler's output."""
    procs = [(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True), what)
             for cmd, what in jobs]
    for p, what in procs:
        log = p.communicate()[0]
        assert p.returncode == 0, f"{what}:\n{log}"


def _objects(out, extra=()):
    """The kernels and the emulator as objects in `out`, plus (source, flags) pairs of `extra`."""
    jobs, objs = [], []
    for src, flags in [(s, ["-x", "c++"]) for s in SOURCES] + list(extra):
        objs.append(str(out / (os.path.basename(src) + ".o")))
        jobs.append((FLAGS + flags + ["-c", src, "-o", objs[-1]], src))
    _compile(jobs)
    return objs


def _configure_signatures(lib):
    lib.emu_configure.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_uint]
    lib.emu_dry_run.argtypes = [ctypes.c_int]
    return lib


def build_kernels(out):
    """The kernels with driver.cpp's C entry points, as a ctypes library."""
    lib = str(out / "libpackedrnn_emu.so")
    subprocess.run(["g++", "-shared", "-o", lib] + _objects(out), check=True)
    return _configure_signatures(ctypes.CDLL(lib))


_OP_LIBRARY = None  # the packedrnn_emu schemas: defined once per process, kept alive


def build_op(out):
    """csrc/cuda/rnn_cuda_launch.cpp, the CUDA op's glue, compiled against tests/cuda_emu/launch_emu.h
    and linked with the emulated kernels: torch.ops.packedrnn_emu.rnn_layer / rnn_layer_backward
    take CPU tensors and run the CUDA op's code. Returns (ops, ctypes library for emu_configure)."""
    global _OP_LIBRARY
    if _OP_LIBRARY is None:
        _OP_LIBRARY = torch.library.Library("packedrnn_emu", "DEF")
        for name in ("rnn_layer", "rnn_layer_backward"):  # the same schemas as packedrnn's
            _OP_LIBRARY.define(str(getattr(torch.ops.packedrnn, name).default._schema).split("::", 1)[1])

        # packedrnn's fake kernels; "by token" where the emulated op takes its lengths as on the host.
        @torch.library.register_fake("packedrnn_emu::rnn_layer", lib=_OP_LIBRARY)
        def _(*args):
            return ops.fake_layer(os.environ.get("PACKEDRNN_EMU_DEVICE_LENGTHS") != "1", *args)
        torch.library.register_fake("packedrnn_emu::rnn_layer_backward", ops.fake_layer_backward, lib=_OP_LIBRARY)
    torch_flags = [f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}"] + \
        [f for p in torch.utils.cpp_extension.include_paths() + [sysconfig.get_paths()["include"]]
         for f in ("-isystem", p)]
    objs = _objects(out, [(os.path.join(CUDA, "rnn_cuda_launch.cpp"), torch_flags)])
    lib = str(out / "libpackedrnn_emu_op.so")
    torch_lib = torch.utils.cpp_extension.library_paths()[0]
    subprocess.run(["g++", "-shared", "-o", lib] + objs +
                   ["-L" + torch_lib, "-ltorch", "-ltorch_cpu", "-lc10", "-Wl,-rpath," + torch_lib], check=True)
    torch.ops.load_library(lib)
    return torch.ops.packedrnn_emu, _configure_signatures(ctypes.CDLL(lib))


def rel_error(a, b):
    """Largest difference relative to the largest value of b; NaN must sit where b has NaN."""
    a, b = a.double(), b.double()
    nan = b.isnan()
    if not torch.equal(a.isnan(), nan):
        return math.inf
    a, b = a[~nan], b[~nan]
    return (a - b).abs().max().item() / max(b.abs().max().item(), 1e-30) if b.numel() else 0.0
