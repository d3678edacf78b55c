// The CPU step product alone (csrc/cpu/step_product.h): the floor a CPU step is measured against.
//   g++ -O3 -std=c++17 -Icsrc scripts/step_product_bench.cpp -o /tmp/step_product_bench
//   /tmp/step_product_bench H B      # LSTM gates: B rows x H inputs times W_hh^T [H, 4H], packed
// Prints the packing time and the median time of one step's product (all unit blocks, one thread).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "cpu/step_product.h"

using namespace packedrnn::cpu;

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s H B\n", argv[0]);
    return 2;
  }
  constexpr int NG = 4;
  const int64_t H = std::atoll(argv[1]), B = std::atoll(argv[2]);
  const Product<float, NG> product;
  const int64_t U = product.U, blocks = (H + U - 1) / U;
  std::vector<float> w(NG * H * H), packed(blocks * H * NG * U), h(B * H), out(B * NG * U);
  for (auto& v : w) v = std::rand() / float(RAND_MAX) - 0.5f;
  for (auto& v : h) v = std::rand() / float(RAND_MAX) - 0.5f;
  using clock = std::chrono::steady_clock;
  const auto t0 = clock::now();
  for (int64_t b = 0; b < blocks; ++b) pack_block<float>({w.data(), H, 1}, NG, H, H, U, b, packed.data() + b * H * NG * U);
  const double pack_us = std::chrono::duration<double, std::micro>(clock::now() - t0).count();
  std::vector<double> runs;
  for (int r = 0; r < 21; ++r) {
    const auto s = clock::now();
    for (int i = 0; i < 100; ++i)
      for (int64_t b = 0; b < blocks; ++b) product(B, H, h.data(), H, packed.data() + b * H * NG * U, out.data());
    runs.push_back(std::chrono::duration<double, std::micro>(clock::now() - s).count() / 100);
  }
  std::sort(runs.begin(), runs.end());
  const double us = runs[runs.size() / 2];
  std::printf("H=%lld B=%lld U=%lld: pack %.1f us, step product %.2f us (median of 21), %.1f GMAC/s\n",
              (long long)H, (long long)B, (long long)U, pack_us, us, B * NG * H * H / us / 1e3);
}
