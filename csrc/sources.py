"""The one list of the extension's sources, read by setup.py (the ahead-of-time build),
packedrnn/_build.py (the just-in-time build) and tests/emulator.py (the CPU emulator's build).
Paths are absolute, under the folder that holds this file (csrc/ in a checkout, packedrnn/csrc/
in an installed package)."""
import glob
import os

HERE = os.path.dirname(os.path.abspath(__file__))
INCLUDE_DIRS = [HERE, os.path.join(HERE, "cuda")]


def _glob(pattern):
    return sorted(glob.glob(os.path.join(HERE, pattern)))


def cpu():
    """Every build: the schemas and the CPU op."""
    return [os.path.join(HERE, "ops.cpp")] + _glob("cpu/*.cpp")


def cuda_kernels():
    """The framework-free CUDA kernels (cuda_runtime.h only): nvcc, or g++ against the emulator."""
    return _glob("cuda/*.cu")


def cuda_glue():
    """The CUDA op's torch glue (against the emulator too, built for CPU tensors)."""
    return _glob("cuda/*_launch.cpp")


def cxx_flags():
    """The C++ compiler's flags for every build. -fopenmp where torch runs on OpenMP (its Linux
    wheels): ATen's at::parallel_for is inline, and without _OPENMP in our translation units it
    runs serially. Nothing more is linked: the OpenMP symbols resolve to the runtime torch loads."""
    import sys

    import torch

    flags = ["-O3"]
    if sys.platform.startswith("linux") and torch.backends.openmp.is_available():
        flags.append("-fopenmp")
    return flags


def extension(with_cuda):
    """Every source of packedrnn._C."""
    return cpu() + (cuda_kernels() + cuda_glue() if with_cuda else [])
