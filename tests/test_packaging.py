"""The wheel carries the C++/CUDA sources (for the just-in-time build from a normal install)."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_build_py_ships_csrc(tmp_path):
    env = dict(os.environ, PACKEDRNN_NO_AOT="1")  # packages and data only: no compiling here
    run = subprocess.run([sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(tmp_path)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    pkg = tmp_path / "packedrnn"
    for rel in ("__init__.py", "bench.py", "csrc/ops.cpp", "csrc/cells.h", "csrc/cpu/rnn_cpu.cpp",
                "csrc/cuda/rnn_kernels.cu", "csrc/cuda/rnn_persistent_forward.cu", "csrc/cuda/persistent_forward.cuh",
                "csrc/cuda/rnn_persistent_backward.cu", "csrc/cuda/persistent_backward.cuh", "csrc/cuda/persistent.cuh",
                "csrc/cuda/rnn_cuda_launch.cpp"):
        assert (pkg / rel).is_file(), rel
