#!/usr/bin/env bash
# Build the whole extension, CUDA kernels included, against the CUDA build of torch on a machine
# without a GPU, and check that it links and loads (its ops register). Not run in CI (it needs a
# 5.5 GB torch); run it once per change to csrc/. docs/ARCHITECTURE.md, "Build".
#   VENV   a virtual environment to use or create (default: .venv-cuda beside the checkout)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-../.venv-cuda}
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q torch==2.14.1 numpy ninja "setuptools>=70"
fi
PY="$VENV/bin/python"
SITE=$("$PY" -c 'import site; print(site.getsitepackages()[0])')
# nvcc on PATH is a wrapper script: name the toolkit itself; cusparse.h and friends come from pip.
export CUDA_HOME=${CUDA_HOME:-$(dirname "$(dirname "$(readlink -f "$(sed -n 's/^exec \([^ ]*\).*/\1/p' "$(command -v nvcc)" || command -v nvcc)")")")}
export CPATH="$SITE/nvidia/cu13/include${CPATH:+:$CPATH}"
# TORCH_CUDA_ARCH_LIST unset: setup.py picks its default where no GPU is visible (as here).
export MAX_JOBS=${MAX_JOBS:-2}
BUILD=$(mktemp -d)
trap 'rm -rf "$BUILD"' EXIT
echo "CUDA_HOME=$CUDA_HOME; building into $BUILD"
PACKEDRNN_CUDA=1 "$PY" setup.py -q build_ext --build-lib "$BUILD" --build-temp "$BUILD/tmp"
SO=$(ls "$BUILD"/packedrnn/_C*.so)
"$PY" - "$SO" <<'PYEOF'
import sys, torch
torch.ops.load_library(sys.argv[1])
for key in ("CPU", "CUDA"):
    assert torch._C._dispatch_has_kernel_for_dispatch_key("packedrnn::rnn_layer", key), key
    assert torch._C._dispatch_has_kernel_for_dispatch_key("packedrnn::rnn_layer_backward", key), key
print("link check OK:", sys.argv[1].rsplit("/", 1)[-1], "registers CPU and CUDA kernels; torch", torch.__version__)
PYEOF
