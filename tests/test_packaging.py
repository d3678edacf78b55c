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


def _setup_module():
    import importlib.util
    spec = importlib.util.spec_from_file_location("packedrnn_setup", os.path.join(ROOT, "setup.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # defines only: setup() runs under __main__
    return module


def test_cuda_archs_default_where_no_gpu_is_visible():
    """torch's arch detection asks the GPU; with none visible (a Docker build) and no
    TORCH_CUDA_ARCH_LIST it raised IndexError: the build names its default list instead."""
    setup = _setup_module()
    env = {}
    setup.default_cuda_archs(env, gpu_visible=False)
    assert env["TORCH_CUDA_ARCH_LIST"] == setup.DEFAULT_CUDA_ARCHS == "8.0;9.0+PTX"
    env = {"TORCH_CUDA_ARCH_LIST": "8.6"}
    setup.default_cuda_archs(env, gpu_visible=False)
    assert env["TORCH_CUDA_ARCH_LIST"] == "8.6"  # the user's list wins
    env = {}
    setup.default_cuda_archs(env, gpu_visible=True)
    assert "TORCH_CUDA_ARCH_LIST" not in env  # torch asks the GPU


def test_isolated_build_needs_no_torch():
    """pyproject's build requirements name no torch: an isolated `pip install .` neither fetches a
    second torch nor builds against one that is not the installed one."""
    text = open(os.path.join(ROOT, "pyproject.toml")).read()
    requires = text.split("[build-system]")[1].split("[")[1].split("]")[0]
    assert "torch" not in requires
    assert 'torch>=2.11,<2.15' in text


def test_a_refused_compiled_module_warns_once(monkeypatch):
    from packedrnn import _build
    calls = []
    monkeypatch.setattr(_build, "_status", {"state": None, "reason": ""})
    monkeypatch.setattr(_build, "_load_aot", lambda: calls.append(1) or False)
    monkeypatch.delenv("PACKEDRNN_FORCE_JIT", raising=False)
    _build.load_aot_at_import()
    _build.load_aot_at_import()
    assert calls == [1]
