// Argument checks of sampler_step shared by the CPU and CUDA launchers.
#pragma once
#include <torch/extension.h>

namespace diffupose {

inline void check_sampler_args(const at::Tensor& x, const at::Tensor& eps, const at::Tensor& rng_state,
                               int64_t n_hyp, bool aggregate) {
  TORCH_CHECK(x.dim() == 3, "sampler_step: x must be [M, J, D], got ", x.sizes());
  TORCH_CHECK(eps.sizes() == x.sizes(), "sampler_step: eps ", eps.sizes(), " must match x ", x.sizes());
  TORCH_CHECK(x.is_floating_point() && eps.is_floating_point(), "sampler_step: x and eps must be floating point");
  TORCH_CHECK(x.device() == eps.device() && x.device() == rng_state.device(),
              "sampler_step: x, eps and rng_state must be on one device");
  TORCH_CHECK(rng_state.scalar_type() == at::kLong && rng_state.numel() == 2,
              "sampler_step: rng_state must be an int64 tensor [seed, offset]");
  TORCH_CHECK(n_hyp >= 1, "sampler_step: n_hyp must be >= 1");
  TORCH_CHECK(!aggregate || x.size(0) % n_hyp == 0, "sampler_step: M = ", x.size(0),
              " is not a multiple of n_hyp = ", n_hyp);
}

}  // namespace diffupose
