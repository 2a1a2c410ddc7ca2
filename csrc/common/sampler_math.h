// One DDIM / DDPM update for one element, shared by the CPU and CUDA sampler-step kernels.
// Reference: diffupose/ops/sampler_step.py::sampler_step_ref.
#pragma once
#include "common/macros.h"

namespace diffupose {

struct SamplerCoefs {
  float sqrt_abar;     // sqrt(abar_t)
  float sqrt_1m_abar;  // sqrt(1 - abar_t)
  float c_x0;          // sqrt(abar_prev)
  float c_eps;         // sqrt(1 - abar_prev - sigma^2)
  float sigma;         // noise scale of this step (0: deterministic)
  float clip;          // clip x0 to [-clip, clip]; <= 0 disables
};

// x_t, predicted eps and a standard normal z  ->  x_{t-1}.
DP_HD float sampler_update(float x, float eps, float z, const SamplerCoefs& c) {
  float x0 = (x - c.sqrt_1m_abar * eps) / c.sqrt_abar;
  if (c.clip > 0.0f) {
    x0 = x0 < -c.clip ? -c.clip : (x0 > c.clip ? c.clip : x0);
    // eps consistent with the clipped x0 (as DDIM implementations do)
    eps = (x - c.sqrt_abar * x0) / c.sqrt_1m_abar;
  }
  return c.c_x0 * x0 + c.c_eps * eps + c.sigma * z;
}

}  // namespace diffupose
