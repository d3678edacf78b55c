// CPU emulator: __nv_bfloat16 as the high 16 bits of a float, rounded to nearest even.
#pragma once

#include <cstdint>
#include <cstring>

struct __nv_bfloat16 {
  uint16_t bits;
};
inline float __bfloat162float(__nv_bfloat16 h) {
  const uint32_t u = (uint32_t)h.bits << 16;
  float v;
  std::memcpy(&v, &u, 4);
  return v;
}
inline __nv_bfloat16 __float2bfloat16(float v) {
  uint32_t u;
  std::memcpy(&u, &v, 4);
  __nv_bfloat16 h;
  if ((u & 0x7fffffffu) > 0x7f800000u) {
    h.bits = (uint16_t)((u >> 16) | 0x40);  // NaN stays a (quiet) NaN
  } else {
    h.bits = (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
  }
  return h;
}
