"""Build: the ahead-of-time extension packedrnn._C when torch is importable at build time.

    pip install --no-build-isolation .      (builds against the torch already installed)

CPU kernels always; CUDA kernels too when torch is a CUDA build and CUDA_HOME is found, or when
PACKEDRNN_CUDA=1 (forced; PACKEDRNN_CUDA=0 turns them off). TORCH_CUDA_ARCH_LIST and MAX_JOBS are
honoured as torch's own BuildExtension honours them; where no GPU is visible (a Docker image build,
a CI machine) and TORCH_CUDA_ARCH_LIST is unset, the CUDA kernels are built for DEFAULT_CUDA_ARCHS.
PACKEDRNN_NO_AOT=1 skips the compiled module: the package then builds it just in time on first
use. csrc/ is shipped inside the package either way.

An isolated build (`pip install .` without --no-build-isolation) has no torch to build against (the
build requirements name none, so pip does not fetch a second one): it ships the sources only, and
the module is compiled just in time against the installed torch on first use.
"""

import importlib.util
import os
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join(ROOT, "csrc")


class BuildPyWithSources(build_py):
    """Ship csrc/ as packedrnn/csrc so the just-in-time build works from a normal install."""

    def run(self):
        super().run()
        shutil.copytree(CSRC, os.path.join(self.build_lib, "packedrnn", "csrc"), dirs_exist_ok=True)


# sm_80 code runs on every Ampere and Ada GPU (sm_80-89), sm_90 on Hopper; the PTX of 9.0 is
# compiled by the driver for newer GPUs. Built where no GPU says which (TORCH_CUDA_ARCH_LIST wins).
DEFAULT_CUDA_ARCHS = "8.0;9.0+PTX"


def default_cuda_archs(environ, gpu_visible: bool) -> None:
    """Sets TORCH_CUDA_ARCH_LIST in `environ` where it is unset and no GPU is visible: torch would
    otherwise ask the absent GPU for its architecture (an IndexError in _get_cuda_arch_flags)."""
    if not environ.get("TORCH_CUDA_ARCH_LIST") and not gpu_visible:
        environ["TORCH_CUDA_ARCH_LIST"] = DEFAULT_CUDA_ARCHS
        print(f"packedrnn: no GPU visible: building the CUDA kernels for TORCH_CUDA_ARCH_LIST={DEFAULT_CUDA_ARCHS}")


def extension():
    try:
        import torch
        from torch.utils import cpp_extension
    except ImportError:
        print("packedrnn: torch is not importable here (an isolated build?): no ahead-of-time module; "
              "it is compiled just in time on first use. Ahead of time: pip install --no-build-isolation .")
        return [], {}
    if os.environ.get("PACKEDRNN_NO_AOT") == "1":
        return [], {}
    force = os.environ.get("PACKEDRNN_CUDA")
    cuda = (force == "1") or (force != "0" and torch.version.cuda is not None
                              and cpp_extension.CUDA_HOME is not None)
    spec = importlib.util.spec_from_file_location("packedrnn_sources", os.path.join(CSRC, "sources.py"))
    listed = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(listed)  # csrc/sources.py: the one list of sources
    sources = [os.path.relpath(p, ROOT) for p in listed.extension(cuda)]
    args = {"cxx": listed.cxx_flags()}  # the C++ standard is left to torch (2.14 needs C++20)
    make = cpp_extension.CppExtension
    if cuda:
        default_cuda_archs(os.environ, torch.cuda.is_available())
        args["nvcc"] = ["-O3"]
        make = cpp_extension.CUDAExtension
    ext = make("packedrnn._C", sources, include_dirs=listed.INCLUDE_DIRS, extra_compile_args=args)

    class BuildExt(cpp_extension.BuildExtension):
        def run(self):
            super().run()
            # Stamp the torch this was built against: _build.py refuses a mismatched _C.
            target = os.path.dirname(self.get_ext_fullpath("packedrnn._C"))
            with open(os.path.join(target, "_C.torch_version"), "w") as f:
                f.write(torch.__version__)

    return [ext], {"build_ext": BuildExt}


if __name__ == "__main__":
    ext_modules, cmdclass = extension()
    cmdclass["build_py"] = BuildPyWithSources
    setup(ext_modules=ext_modules, cmdclass=cmdclass)
