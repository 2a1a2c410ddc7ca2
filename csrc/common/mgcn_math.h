// Per-element epilogue math of the modulated graph convolution, shared by CPU and CUDA.
// Reference: diffupose/ops/mgcn.py::mgcn_ref.
//   u   = pre * (1 + scale) + shift
//   out = act(u) + residual
#pragma once
#include "common/activation.h"
#include "common/macros.h"

namespace diffupose {

DP_HD float mgcn_epilogue_fwd(float pre, float scale, float shift, int act) {
  return act_fwd(pre * (1.0f + scale) + shift, act);
}

struct MgcnEpilogueGrad {
  float dpre;  // dL/dpre
  float dz;    // dL/du: dshift accumulates dz, dscale accumulates dz * pre
};

// g = dL/dout at one element.
DP_HD MgcnEpilogueGrad mgcn_epilogue_bwd(float g, float pre, float scale, float shift, int act) {
  const float dz = g * act_bwd(pre * (1.0f + scale) + shift, act);
  return {dz * (1.0f + scale), dz};
}

}  // namespace diffupose
