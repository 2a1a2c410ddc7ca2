// Epilogue activations of the modulated graph convolution, shared by CPU and CUDA.
// Codes match diffupose/ops/mgcn.py::ACTIVATIONS.
#pragma once
#include <cmath>

#include "common/macros.h"

namespace diffupose {

enum Act : int { kActNone = 0, kActRelu = 1, kActSilu = 2 };

DP_HD float act_fwd(float u, int act) {
  if (act == kActRelu) return u > 0.0f ? u : 0.0f;
  if (act == kActSilu) return u / (1.0f + expf(-u));
  return u;
}

// d act(u) / du
DP_HD float act_bwd(float u, int act) {
  if (act == kActRelu) return u > 0.0f ? 1.0f : 0.0f;
  if (act == kActSilu) {
    const float s = 1.0f / (1.0f + expf(-u));
    return s * (1.0f + u * (1.0f - s));
  }
  return 1.0f;
}

}  // namespace diffupose
