"""Every framework-free .cu compiles with bare nvcc for sm_80 and sm_90 (no GPU, no CUDA torch)."""

import os
import shutil
import subprocess

import pytest

from packedrnn import _build

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LISTED = _build.source_list(os.path.join(ROOT, "csrc"))  # csrc/sources.py
SOURCES = LISTED.cuda_kernels()


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed")
@pytest.mark.parametrize("arch", ["80", "90"])
@pytest.mark.parametrize("source", SOURCES, ids=os.path.basename)
def test_cu_compiles_with_bare_nvcc(source, arch, tmp_path):
    cmd = ["nvcc", "-std=c++17"] + ["-I" + d for d in LISTED.INCLUDE_DIRS] + [
           "-c", source, "-o", str(tmp_path / "k.o"), f"-gencode=arch=compute_{arch},code=sm_{arch}",
           # torch's CUDAExtension flags: the .cu must not rely on implicit half conversions
           "-D__CUDA_NO_HALF_OPERATORS__", "-D__CUDA_NO_HALF_CONVERSIONS__",
           "-D__CUDA_NO_BFLOAT16_CONVERSIONS__", "-D__CUDA_NO_HALF2_OPERATORS__", "-Werror", "all-warnings"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr


def test_there_are_cuda_sources():
    assert SOURCES, "no csrc/cuda/*.cu found"
