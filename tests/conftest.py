import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

import packedrnn  # noqa: E402
from packedrnn import ops  # noqa: E402

# Every backend that can run CPU tensors here: the reference always, the compiled op when built.
CPU_BACKENDS = ["reference"] + (["cpu"] if ops.available("cpu") else [])

# Largest error seen per (dtype, quantity), printed at the end of the run for the closing notes.
ERRORS = {}


@pytest.fixture(params=CPU_BACKENDS)
def cpu_backend(request, monkeypatch):
    monkeypatch.setenv("PACKEDRNN_BACKEND", request.param)
    return request.param


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
