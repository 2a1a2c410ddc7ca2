// Fused sampler step, CPU. Math: common/sampler_math.h; noise: common/philox.h.
#include <ATen/Parallel.h>
#include <torch/extension.h>
#include <torch/library.h>

#include <cmath>
#include <vector>

#include "common/philox.h"
#include "common/sampler_math.h"
#include "sampler_check.h"

namespace diffupose {
namespace {

template <typename xt, typename et>
void sampler_step_cpu_impl(const xt* x, const et* eps, xt* out, float* mean, float* spread, int64_t frames,
                           int64_t n_hyp, int64_t J, int64_t D, uint64_t seed, uint64_t base,
                           const SamplerCoefs& c, bool aggregate) {
  const int64_t per = n_hyp * J * D;  // elements of one frame's hypotheses
  const bool noisy = c.sigma != 0.0f;
  at::parallel_for(0, frames, 16, [&](int64_t f0, int64_t f1) {
    std::vector<float> acc(aggregate ? J * D : 0);
    for (int64_t f = f0; f < f1; ++f) {
      const int64_t off = f * per;
      for (int64_t i = 0; i < per; ++i) {
        const int64_t e = off + i;
        const float z = noisy ? philox_normal(seed, base + static_cast<uint64_t>(e)) : 0.0f;
        out[e] = static_cast<xt>(sampler_update(static_cast<float>(x[e]), static_cast<float>(eps[e]), z, c));
      }
      if (!aggregate) continue;
      // mean and spread of the values as stored (in x's dtype)
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (int64_t n = 0; n < n_hyp; ++n)
        for (int64_t k = 0; k < J * D; ++k) acc[k] += static_cast<float>(out[off + n * J * D + k]);
      for (int64_t k = 0; k < J * D; ++k) {
        acc[k] /= static_cast<float>(n_hyp);
        mean[f * J * D + k] = acc[k];
      }
      for (int64_t j = 0; j < J; ++j) {
        float s = 0.0f;
        for (int64_t n = 0; n < n_hyp; ++n)
          for (int64_t d = 0; d < D; ++d) {
            const float v = static_cast<float>(out[off + n * J * D + j * D + d]) - acc[j * D + d];
            s += v * v;
          }
        spread[f * J + j] = std::sqrt(s / static_cast<float>(n_hyp));
      }
    }
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> sampler_step_cpu(
    const at::Tensor& x_, const at::Tensor& eps_, const at::Tensor& rng_state, int64_t counter_offset,
    double sqrt_abar, double sqrt_1m_abar, double c_x0, double c_eps, double sigma, double clip, int64_t n_hyp,
    bool aggregate) {
  check_sampler_args(x_, eps_, rng_state, n_hyp, aggregate);
  const at::Tensor x = x_.contiguous(), eps = eps_.contiguous();
  const int64_t M = x.size(0), J = x.size(1), D = x.size(2);
  const int64_t hyp = aggregate ? n_hyp : 1;
  const int64_t frames = M / hyp;
  at::Tensor out = at::empty_like(x);
  at::Tensor mean = aggregate ? at::empty({frames, J, D}, x.options().dtype(at::kFloat)) : at::empty({0}, x.options());
  at::Tensor spread = aggregate ? at::empty({frames, J}, x.options().dtype(at::kFloat)) : at::empty({0}, x.options());
  const int64_t* st = rng_state.data_ptr<int64_t>();
  const uint64_t seed = static_cast<uint64_t>(st[0]);
  const uint64_t base = static_cast<uint64_t>(st[1]) + static_cast<uint64_t>(counter_offset);
  const SamplerCoefs c{static_cast<float>(sqrt_abar), static_cast<float>(sqrt_1m_abar), static_cast<float>(c_x0),
                       static_cast<float>(c_eps),     static_cast<float>(sigma),        static_cast<float>(clip)};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "sampler_step_cpu_x", [&] {
    using xt = scalar_t;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, eps.scalar_type(), "sampler_step_cpu_eps", [&] {
      sampler_step_cpu_impl<xt, scalar_t>(x.data_ptr<xt>(), eps.data_ptr<scalar_t>(), out.data_ptr<xt>(),
                                          aggregate ? mean.data_ptr<float>() : nullptr,
                                          aggregate ? spread.data_ptr<float>() : nullptr, frames, hyp, J, D, seed,
                                          base, c, aggregate);
    });
  });
  if (aggregate) {
    mean = mean.to(x.scalar_type());
    spread = spread.to(x.scalar_type());
  }
  return {out, mean, spread};
}

}  // namespace

TORCH_LIBRARY_IMPL(diffupose, CPU, m) { m.impl("sampler_step", &sampler_step_cpu); }

}  // namespace diffupose
