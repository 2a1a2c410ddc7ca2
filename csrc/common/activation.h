// Epilogue activations of the modulated graph convolution, shared by CPU and CUDA, templated
// on the accumulation type (float for fp32/fp16/bf16 inputs, double for fp64: a float-only
// version would cap an fp64 op, and its gradcheck, at fp32 accuracy).
// Codes match diffupose/ops/mgcn.py::ACTIVATIONS.
#pragma once
#include <cmath>

#include "common/macros.h"

namespace diffupose {

enum Act : int { kActNone = 0, kActRelu = 1, kActSilu = 2 };

// exp in the type's own precision (expf for float, also in device code)
struct StdExp {
  DP_HD float operator()(float v) const { return expf(v); }
  DP_HD double operator()(double v) const { return exp(v); }
};

// Exp: a functor, so the CPU row loops can swap in an exp the compiler vectorizes.
template <typename T, typename Exp = StdExp>
DP_HD T act_fwd(T u, int act, Exp e = {}) {
  if (act == kActRelu) return u > T(0) ? u : T(0);
  if (act == kActSilu) return u / (T(1) + e(-u));
  return u;
}

// d act(u) / du
template <typename T, typename Exp = StdExp>
DP_HD T act_bwd(T u, int act, Exp e = {}) {
  if (act == kActRelu) return u > T(0) ? T(1) : T(0);
  if (act == kActSilu) {
    const T s = T(1) / (T(1) + e(-u));
    return s * (T(1) + u * (T(1) - s));
  }
  return T(1);
}

}  // namespace diffupose
