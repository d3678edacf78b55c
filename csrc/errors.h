// Bad arguments to a compiled op raise packedrnn.PackedRNNError (packedrnn/validation.py), the class
// and the words of the Python layer's checks, whoever calls the op: packedrnn.functional, a traced
// graph, torch.ops.packedrnn.* directly. torch turns a torch::PyTorchError thrown by an op into the
// Python type its python_type() names (CATCH_TH_ERRORS, torch/csrc/Exceptions.h); without Python
// (a C++ caller) it is a std::exception with the same message.
#pragma once

#include <c10/util/StringUtil.h>
#include <torch/csrc/Exceptions.h>

namespace packedrnn {

struct ArgumentError : torch::PyTorchError {
  using PyTorchError::PyTorchError;
  // Called with the GIL held, by torch's translation to Python; looked up once.
  PyObject* python_type() override {
    static PyObject* type = [] {
      PyObject* module = PyImport_ImportModule("packedrnn.validation");
      PyObject* found = module ? PyObject_GetAttrString(module, "PackedRNNError") : nullptr;
      Py_XDECREF(module);
      if (found == nullptr) {  // packedrnn not importable: its base class still fits
        PyErr_Clear();
        return PyExc_ValueError;
      }
      return found;  // kept for the life of the process
    }();
    return type;
  }
};

}  // namespace packedrnn

// PACKEDRNN_CHECK(cond, message parts...): an ArgumentError unless cond.
#define PACKEDRNN_CHECK(cond, ...)                                      \
  do {                                                                  \
    if (C10_UNLIKELY(!(cond))) {                                        \
      throw ::packedrnn::ArgumentError(::c10::str(__VA_ARGS__));        \
    }                                                                   \
  } while (false)
