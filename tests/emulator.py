"""Builds the CPU emulator of the CUDA kernels (emulator/README.md) for the emulated tests:
the kernels' own source compiled with g++ against emulator/, as a ctypes library
(test_cuda_emulated.py) or, with the CUDA op's torch glue, as the op packedrnn_emu on CPU tensors
(test_cuda_op_emulated.py)."""
import ctypes
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

from packedrnn import _build, ops  # ops registers packedrnn's schemas, which packedrnn_emu repeats

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EMU = os.path.join(ROOT, "emulator")
LISTED = _build.source_list(os.path.join(ROOT, "csrc"))  # csrc/sources.py
# The CUDA kernels (persistent and per-step), the emulator and its C entry points.
SOURCES = LISTED.cuda_kernels() + [os.path.join(EMU, "emu.cpp"), os.path.join(EMU, "driver.cpp")]
# The emulator's folders come first on the include path: its headers stand for CUDA's.
FLAGS = ["g++", "-std=c++17", "-O1", "-fPIC", "-DPACKEDRNN_EMULATE", "-I" + os.path.join(EMU, "include"),
         "-I" + EMU] + ["-I" + d for d in LISTED.INCLUDE_DIRS] + ["-Wall", "-Wno-unknown-pragmas", "-Werror"]


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
    lib.emu_set_compute_capability.argtypes = [ctypes.c_int]
    lib.emu_dry_run.argtypes = [ctypes.c_int]
    lib.emu_last_launch.argtypes = [ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_size_t)]
    return lib


def build_kernels(out):
    """The kernels with driver.cpp's C entry points, as a ctypes library."""
    lib = str(out / "libpackedrnn_emu.so")
    subprocess.run(["g++", "-shared", "-o", lib] + _objects(out), check=True)
    return _configure_signatures(ctypes.CDLL(lib))


_OP_LIBRARY = None  # the packedrnn_emu schemas: defined once per process, kept alive
_BUILT_OP = []  # build_op's result: its kernels register once per process


def build_op(out):
    """csrc/cuda/rnn_cuda_launch.cpp, the CUDA op's glue, compiled against emulator/launch_emu.h
    and linked with the emulated kernels: torch.ops.packedrnn_emu.rnn_layer / rnn_layer_backward
    take CPU tensors and run the CUDA op's code. Returns (ops, ctypes library for emu_configure),
    built once per process."""
    global _OP_LIBRARY
    if _BUILT_OP:
        return _BUILT_OP[0]
    if _OP_LIBRARY is None:
        _OP_LIBRARY = torch.library.Library("packedrnn_emu", "DEF")
        for name in ("rnn_layer", "rnn_layer_backward"):  # the same schemas as packedrnn's (token_index: packedrnn's)
            _OP_LIBRARY.define(str(getattr(torch.ops.packedrnn, name).default._schema).split("::", 1)[1])

        # packedrnn's fake kernels.
        torch.library.register_fake("packedrnn_emu::rnn_layer", ops.fake_layer, lib=_OP_LIBRARY)
        torch.library.register_fake("packedrnn_emu::rnn_layer_backward", ops.fake_layer_backward, lib=_OP_LIBRARY)
    torch_flags = [f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}"] + \
        [f for p in torch.utils.cpp_extension.include_paths() + [sysconfig.get_paths()["include"]]
         for f in ("-isystem", p)]
    objs = _objects(out, [(src, torch_flags) for src in LISTED.cuda_glue()])
    lib = str(out / "libpackedrnn_emu_op.so")
    torch_lib = torch.utils.cpp_extension.library_paths()[0]
    subprocess.run(["g++", "-shared", "-o", lib] + objs +
                   ["-L" + torch_lib, "-ltorch", "-ltorch_cpu", "-lc10", "-Wl,-rpath," + torch_lib], check=True)
    torch.ops.load_library(lib)
    _BUILT_OP.append((torch.ops.packedrnn_emu, _configure_signatures(ctypes.CDLL(lib))))
    return _BUILT_OP[0]


def rel_error(a, b):
    """Largest difference relative to the largest value of b; NaN must sit where b has NaN."""
    a, b = a.double(), b.double()
    nan = b.isnan()
    if not torch.equal(a.isnan(), nan):
        return math.inf
    a, b = a[~nan], b[~nan]
    return (a - b).abs().max().item() / max(b.abs().max().item(), 1e-30) if b.numel() else 0.0
