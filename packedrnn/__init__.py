"""packedrnn: fast, padding-safe LSTM/GRU/RNN over variable-length batches.

    from packedrnn import PackedLSTM
    lstm = PackedLSTM(80, 256, num_layers=2, bidirectional=True, batch_first=True)
    out, (h_n, c_n) = lstm(padded, lengths=lengths)
"""

__version__ = "0.1.0"

from . import cells, functional, ops, plan, reference  # noqa: E402  (importing ops loads the compiled module)
from .export import install_onnx_translations, onnx_translations  # noqa: E402
from .modules import PackedGRU, PackedLSTM, PackedRNN, convert  # noqa: E402
from .plan import backend, tuning  # noqa: E402
from .validation import PackedRNNError  # noqa: E402

__all__ = ["PackedLSTM", "PackedGRU", "PackedRNN", "PackedRNNError", "convert", "backend", "tuning", "onnx_translations",
           "cells", "functional", "ops", "plan", "reference", "__version__"]

install_onnx_translations()
