// CPU emulator: the grid group of a cooperative launch (emulator/README.md).
#pragma once

namespace emu {
void grid_barrier();
}

namespace cooperative_groups {
struct grid_group {
  void sync() { emu::grid_barrier(); }
};
inline grid_group this_grid() { return {}; }
}  // namespace cooperative_groups
