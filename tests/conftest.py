import contextlib
import os
import sys

# Deterministic cuBLAS (bitwise-repeatable runs); must be set before CUDA initialises.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))


import packedrnn  # noqa: E402
from helpers import BACKENDS  # noqa: E402

if torch.cuda.is_available():  # compare with cuDNN in true fp32
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False

# Largest error seen per (dtype, quantity), printed at the end of the run for the closing notes.
ERRORS = {}


@pytest.fixture
def tune():
    """tune(**switches): packedrnn.tuning(**switches) for the rest of the test."""
    with contextlib.ExitStack() as stack:
        yield lambda **switches: stack.enter_context(packedrnn.tuning(**switches))


@pytest.fixture(params=BACKENDS, ids=[b for b, _ in BACKENDS])
def device(request, tune):
    """Runs the test once per backend (forced with packedrnn.tuning); the value is its device."""
    backend, dev = request.param
    tune(backend=backend.split("-")[0], recurrence="step" if backend.endswith("per-step") else None)
    return dev


@pytest.fixture
def record():
    return ERRORS


def pytest_terminal_summary(terminalreporter):
    if ERRORS:
        terminalreporter.write_line("largest error against nn.LSTM/GRU + packing:")
        for (dtype, kind), v in sorted(ERRORS.items(), key=str):
            terminalreporter.write_line(f"  {str(dtype):15s} {kind:12s} {v:.3g}")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: larger grids, not part of the default run")
    config.addinivalue_line("markers", "gpu: needs a CUDA device")
