// Philox4x32-10 and the Box-Muller normal of Triton's tl.randn, bit for bit in the integer
// part, so the CPU, CUDA and Triton backends (and the PyTorch reference, see
// diffupose/ops/philox.py) draw the same noise for the same (seed, counter).
//
//   key     = (seed & 0xffffffff, seed >> 32)
//   counter = (c & 0xffffffff, c >> 32, 0, 0)
//   z       = sqrt(-2 log(max(1e-7, U(out0)))) * cos(2 pi U(out1))
// where U(u) = (int32(u) < 0 ? ~int32(u) : int32(u)) * 4.6566127342e-10  (a float in [0, 1)).
#pragma once
#include <cmath>
#include <cstdint>

#include "common/macros.h"

namespace diffupose {

DP_HD uint32_t dp_mulhi32(uint32_t a, uint32_t b) {
#if defined(__CUDA_ARCH__)
  return __umulhi(a, b);
#else
  return static_cast<uint32_t>((static_cast<uint64_t>(a) * static_cast<uint64_t>(b)) >> 32);
#endif
}

struct Philox4 {
  uint32_t c0, c1, c2, c3;
};

DP_HD Philox4 philox4x32_10(uint64_t seed, uint64_t counter) {
  constexpr uint32_t kKeyA = 0x9E3779B9u, kKeyB = 0xBB67AE85u;
  constexpr uint32_t kRoundA = 0xD2511F53u, kRoundB = 0xCD9E8D57u;
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  uint32_t c0 = static_cast<uint32_t>(counter), c1 = static_cast<uint32_t>(counter >> 32);
  uint32_t c2 = 0u, c3 = 0u;
#pragma unroll
  for (int r = 0; r < 10; ++r) {
    const uint32_t p0 = c0, p2 = c2;
    c0 = dp_mulhi32(kRoundB, p2) ^ c1 ^ k0;
    c2 = dp_mulhi32(kRoundA, p0) ^ c3 ^ k1;
    c1 = kRoundB * p2;
    c3 = kRoundA * p0;
    k0 += kKeyA;
    k1 += kKeyB;
  }
  return {c0, c1, c2, c3};
}

DP_HD float philox_uniform(uint32_t u) {
  int32_t i = static_cast<int32_t>(u);
  i = i < 0 ? ~i : i;
  return static_cast<float>(i) * 4.6566127342e-10f;
}

// One standard normal for (seed, counter), as tl.randn(seed, counter) computes it.
DP_HD float philox_normal(uint64_t seed, uint64_t counter) {
  const Philox4 r = philox4x32_10(seed, counter);
  float u1 = philox_uniform(r.c0);
  const float u2 = philox_uniform(r.c1);
  u1 = u1 > 1.0e-7f ? u1 : 1.0e-7f;
  const float th = 6.283185307179586f * u2;
  return sqrtf(-2.0f * logf(u1)) * cosf(th);
}

}  // namespace diffupose
