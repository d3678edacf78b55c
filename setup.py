"""Build: the ahead-of-time extension packedrnn._C when torch is importable at build time.

    pip install --no-build-isolation .      (builds against the torch already installed)

CPU kernels always; CUDA kernels too when torch is a CUDA build and CUDA_HOME is found, or when
PACKEDRNN_CUDA=1 (forced; PACKEDRNN_CUDA=0 turns them off). TORCH_CUDA_ARCH_LIST and MAX_JOBS are
honoured as torch's own BuildExtension honours them. PACKEDRNN_NO_AOT=1 skips the compiled module:
the package then builds it just in time on first use. csrc/ is shipped inside the package either way.
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


def extension():
    try:
        import torch
        from torch.utils import cpp_extension
    except ImportError:
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
    args = {"cxx": ["-O3"]}  # the C++ standard is left to torch (2.14 needs C++20)
    make = cpp_extension.CppExtension
    if cuda:
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


ext_modules, cmdclass = extension()
cmdclass["build_py"] = BuildPyWithSources
setup(ext_modules=ext_modules, cmdclass=cmdclass)
