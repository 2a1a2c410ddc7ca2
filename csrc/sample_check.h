// Argument checks of the whole-sampler op shared by its CPU and CUDA launchers (the same checks,
// the same messages); each launcher adds its own limits and the per-layer weight checks.
#pragma once
#include <torch/extension.h>

#include <cstdint>

namespace diffupose {

constexpr int64_t kSampleCoefs = 6;  // per step: sqrt_abar, sqrt_1m_abar, c_x0, c_eps, sigma, clip

struct SampleDims {
  int64_t B, J, nb, S, d, M;  // frames, joints, blocks, steps, d_model, samples (B x n_hyp)
};

inline SampleDims check_sample_args(const at::Tensor& y, at::TensorList weights, const at::Tensor& film,
                                    c10::ArrayRef<double> coefs, const at::Tensor& rng_state, int64_t n_hyp,
                                    int64_t counter_stride, c10::ArrayRef<int64_t> flip_perm, int64_t act,
                                    int64_t root) {
  TORCH_CHECK(y.dim() == 3 && y.size(2) == 2 && y.is_floating_point(),
              "sample: y must be floating-point [B, J, 2], got ", y.sizes());
  SampleDims s{};
  s.B = y.size(0), s.J = y.size(1);
  TORCH_CHECK(s.J >= 1, "sample: y has no joints");
  TORCH_CHECK(n_hyp >= 1, "sample: n_hyp must be >= 1, got ", n_hyp);
  TORCH_CHECK(weights.size() >= 8 && weights.size() % 8 == 0,
              "sample: weights must be 4 tensors per layer for the input layer, 2 per block and the out layer, got ",
              weights.size());
  s.nb = (static_cast<int64_t>(weights.size()) / 4 - 2) / 2;
  TORCH_CHECK(film.dim() == 4 && film.size(1) == s.nb && film.size(2) == 2,
              "sample: film must be [steps, ", s.nb, ", 2, d_model], got ", film.sizes());
  s.S = film.size(0), s.d = weights[1].dim() == 2 ? weights[1].size(1) : -1;
  TORCH_CHECK(s.S >= 1 && static_cast<int64_t>(coefs.size()) == s.S * kSampleCoefs, "sample: coefs must hold ",
              kSampleCoefs, " numbers for each of the film's ", s.S, " steps, got ", coefs.size());
  TORCH_CHECK(s.d >= 1 && film.size(3) == s.d, "sample: film must be [steps, ", s.nb, ", 2, ", s.d, "], got ",
              film.sizes());
  TORCH_CHECK(rng_state.device() == y.device() && rng_state.scalar_type() == at::kLong && rng_state.numel() == 2,
              "sample: rng_state must be an int64 tensor [seed, offset] on ", y.device());
  TORCH_CHECK(film.device() == y.device(), "sample: y and film must be on one device");
  s.M = s.B * n_hyp;
  TORCH_CHECK(counter_stride >= s.M * s.J * 3, "sample: counter_stride ", counter_stride, " is smaller than the ",
              s.M * s.J * 3, " elements of a step");
  TORCH_CHECK(flip_perm.empty() || static_cast<int64_t>(flip_perm.size()) == s.J,
              "sample: flip_perm must be empty or ", s.J, " joints, got ", flip_perm.size());
  for (int64_t v : flip_perm) TORCH_CHECK(v >= 0 && v < s.J, "sample: flip_perm entry ", v, " is not a joint of ", s.J);
  TORCH_CHECK(act >= 0 && act <= 2, "sample: act must be 0 (none), 1 (relu) or 2 (silu), got ", act);
  TORCH_CHECK(root >= 0 && root < s.J, "sample: root ", root, " is not a joint of ", s.J);
  return s;
}

}  // namespace diffupose
