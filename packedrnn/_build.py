"""Find or build the compiled extension.

Order of preference:
  1. the ahead-of-time module packedrnn/_C*.so (pip install with torch importable at build time),
     loaded at import; refused, with a loud warning, when it was built against another torch;
  2. a just-in-time build of the shipped C++/CUDA sources with torch.utils.cpp_extension.load,
     on first use, cached under torch's extension cache (TORCH_EXTENSIONS_DIR);
  3. neither (no compiler, a failed build): one warning, and packedrnn.reference serves every call.
PACKEDRNN_FORCE_JIT=1 skips step 1 (used by the test of the JIT path).
"""

import glob
import os
import sys
import warnings

import torch

_HERE = os.path.dirname(os.path.abspath(__file__))
_status = {"state": None, "reason": "not loaded yet"}  # state: None (untried), True, False


def sources_dir() -> str:
    """csrc/ inside the installed package, or beside it in a source checkout."""
    for d in (os.path.join(_HERE, "csrc"), os.path.join(os.path.dirname(_HERE), "csrc")):
        if os.path.isfile(os.path.join(d, "ops.cpp")):
            return d
    return ""


def source_list(src: str = ""):
    """csrc/sources.py (the one list of the extension's sources) of `src` or sources_dir()."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("packedrnn_sources", os.path.join(src or sources_dir(), "sources.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _torch_tag() -> str:
    return torch.__version__


def _load_aot() -> bool:
    found = glob.glob(os.path.join(_HERE, "_C*.so")) + glob.glob(os.path.join(_HERE, "_C*.pyd"))
    if not found:
        return False
    stamp = os.path.join(_HERE, "_C.torch_version")
    built_for = "an unknown torch"
    if os.path.exists(stamp):
        with open(stamp) as f:
            built_for = f.read().strip()
    if built_for != _torch_tag():
        warnings.warn(
            f"\n\n*** packedrnn: the compiled module {os.path.basename(found[0])} was built against "
            f"torch {built_for}, but torch {_torch_tag()} is installed. It is NOT loaded (it could "
            f"crash). packedrnn compiles its extension just in time on first use instead (once, "
            f"cached); to build it ahead of time again, reinstall from the packedrnn source tree: "
            f"pip install --no-build-isolation --force-reinstall <path to the packedrnn checkout> ***\n",
            stacklevel=3)
        return False
    torch.ops.load_library(found[0])
    return True


def _jit_build() -> bool:
    src = sources_dir()
    if not src:
        _status["reason"] = "no compiled module and no C++ sources to build one"
        return False
    from torch.utils import cpp_extension

    cuda = torch.cuda.is_available() and cpp_extension.CUDA_HOME is not None
    listed = source_list(src)
    name = "packedrnn_" + _torch_tag().replace(".", "_").replace("+", "_") + ("_cuda" if cuda else "_cpu")
    where = os.path.join(cpp_extension._get_build_directory(name, verbose=False))
    if not glob.glob(os.path.join(where, name + ".*so")) + glob.glob(os.path.join(where, name + ".pyd")):
        print(f"packedrnn: compiling the C++{'/CUDA' if cuda else ''} extension just in time "
              f"(first use only; a minute or more), cached in {where}", file=sys.stderr, flush=True)
    try:
        cpp_extension.load(name=name, sources=listed.extension(cuda), extra_include_paths=listed.INCLUDE_DIRS,
                           extra_cflags=listed.cxx_flags(), extra_cuda_cflags=["-O3"], is_python_module=False,
                           verbose=False)
    except Exception as e:  # no compiler, or a failed build: fall back, loudly once
        _status["reason"] = f"the just-in-time build failed: {str(e).strip().splitlines()[-1] if str(e).strip() else e!r}"
        warnings.warn(f"packedrnn: {_status['reason']}. Using the pure-PyTorch reference backend "
                      "(correct, slower).", stacklevel=4)
        return False
    return True


def load_aot_at_import() -> None:
    """The ahead-of-time module, tried once per process (a refused one warns once)."""
    if _status["state"] is None and not _status.get("aot_tried") and os.environ.get("PACKEDRNN_FORCE_JIT") != "1":
        _status["aot_tried"] = True
        if _load_aot():
            _status.update(state=True, reason="")


def load() -> bool:
    """True once the ops are registered; builds just in time on the first call if needed."""
    if _status["state"] is None:
        load_aot_at_import()
    if _status["state"] is None:
        ok = _jit_build()
        _status.update(state=ok, reason="" if ok else _status["reason"])
    return bool(_status["state"])


def loaded() -> bool:
    """True when the ops are registered already (no build is started)."""
    return _status["state"] is True


def unavailable_reason() -> str:
    return _status["reason"]
