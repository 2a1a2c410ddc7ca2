// Per-element epilogue math of the modulated graph convolution, shared by CPU and CUDA,
// in the accumulation type T. Reference: diffupose/ops/mgcn.py::mgcn_ref.
//   u   = pre * (1 + scale) + shift
//   out = act(u) + residual
#pragma once
#include "common/activation.h"
#include "common/macros.h"

namespace diffupose {

template <typename T, typename Exp = StdExp>
DP_HD T mgcn_epilogue_fwd(T pre, T scale, T shift, int act, Exp e = {}) {
  return act_fwd<T>(pre * (T(1) + scale) + shift, act, e);
}

template <typename T>
struct MgcnEpilogueGrad {
  T dpre;  // dL/dpre
  T dz;    // dL/du: dshift accumulates dz, dscale accumulates dz * pre
};

// g = dL/dout at one element.
template <typename T, typename Exp = StdExp>
DP_HD MgcnEpilogueGrad<T> mgcn_epilogue_bwd(T g, T pre, T scale, T shift, int act, Exp e = {}) {
  const T dz = g * act_bwd<T>(pre * (T(1) + scale) + shift, act, e);
  return {dz * (T(1) + scale), dz};
}

}  // namespace diffupose
