// The cells, each one header under cells/ (the gate count, the forward and backward point-wise math,
// what the backward reads), and what the engines derive from a cell: the saved row's layout and
// the dispatch from an op's `cell` code. The CPU op (cpu/rnn_cpu.cpp) and the CUDA kernels
// (cuda/rnn_kernels.cu, cuda/persistent*.cuh) are written once over a cell's trait; a new cell is
// one header here, a line in with_cell below and an entry in packedrnn/cells.py.
//
// Shape legend used across csrc/:
//   T  padded steps   B  batch rows   I  input features   D  directions (1 or 2)
//   H  hidden units   P  recurrent state size (proj_size if > 0, else H)
//   G  gate rows: Cell::kGates * H (LSTM i, f, g, o; GRU r, z, n; Elman one), in nn's order
#pragma once

#include <stdint.h>

#include "cells/gru.h"
#include "cells/lstm.h"
#include "cells/scalar.h"
#include "cells/rnn.h"

namespace packedrnn {

// What the forward pass keeps per (direction, t, b) for the backward pass, as offsets into one
// row of K values of the `saved` tensor. Everything else is recomputed.
//   act     the cell's kAct values per unit (LSTM i, f, g, o; GRU r, z, n, hn; Elman h_t)
//   c_prev  H, cells with a cell state (the backward's `prev`; other cells read h_prev)
//   m       H, only with a projection: o * tanh(c), which the projection's weight gradient needs
//   h_prev  P, for dW_hh
struct SavedLayout {
  int64_t act, c_prev, m, h_prev, K;
  int64_t prev;  // what the cell's backward takes as `prev`: c_prev or h_prev
  template <typename Cell>
  static PRNN_HD SavedLayout of(int64_t H, int64_t P, bool proj) {
    SavedLayout L;
    L.act = 0;
    int64_t next = Cell::kAct * H;
    L.c_prev = Cell::kCellState ? next : -1;
    next += Cell::kCellState ? H : 0;
    L.m = proj ? next : -1;
    next += proj ? H : 0;
    L.h_prev = next;
    L.K = next + P;
    L.prev = Cell::kCellState ? L.c_prev : L.h_prev;
    return L;
  }
};

// f(Cell{}) for the cell of code `code`; false when no cell has that code.
template <typename F>
bool with_cell(int64_t code, F&& f) {
  switch (code) {
    case LstmCell::kCode: f(LstmCell{}); return true;
    case GruCell::kCode: f(GruCell{}); return true;
    case RnnTanhCell::kCode: f(RnnTanhCell{}); return true;
    case RnnReluCell::kCode: f(RnnReluCell{}); return true;
  }
  return false;
}

}  // namespace packedrnn
