// Fused sampler step, CUDA. Same per-element math as the CPU kernel (common/sampler_math.h),
// same noise (common/philox.h; built without --use_fast_math, so its logf / cosf / sqrtf and the
// update's divisions are the precise ones and the noise matches the CPU's to a few ulps). rng_state is read on the device, so a captured CUDA graph
// draws fresh noise once the state tensor is advanced between replays.
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/extension.h>
#include <torch/library.h>

#include "common/philox.h"
#include "common/sampler_math.h"
#include "sampler_check.h"

namespace diffupose {
namespace {

constexpr int kThreads = 256;

// Where element (m, k = j * D + d) of eps [M, J, D] lives: the model's eps is a strided view into
// its [M, J, 5] output, read in place rather than copied by .contiguous() (one kernel less a step).
struct EpsLayout {
  int64_t sm, sj, sd;
  int D;
  __device__ __forceinline__ int64_t at(int64_t m, int k) const {
    return m * sm + static_cast<int64_t>(k / D) * sj + static_cast<int64_t>(k % D) * sd;
  }
};

// x, out: [M * J * D] flat, eps strided. One thread per element.
template <typename xt, typename et>
__global__ void sampler_step_kernel(const xt* __restrict__ x, const et* __restrict__ eps, EpsLayout el,
                                    xt* __restrict__ out, int64_t numel, int JD,
                                    const int64_t* __restrict__ rng_state, int64_t counter_offset, SamplerCoefs c) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= numel) return;
  const uint64_t seed = static_cast<uint64_t>(rng_state[0]);
  const uint64_t base = static_cast<uint64_t>(rng_state[1]) + static_cast<uint64_t>(counter_offset);
  const float z = c.sigma != 0.0f ? philox_normal(seed, base + static_cast<uint64_t>(i)) : 0.0f;
  const float e = static_cast<float>(eps[el.at(i / JD, static_cast<int>(i % JD))]);
  out[i] = static_cast<xt>(sampler_update(static_cast<float>(x[i]), e, z, c));
}

// Last step: one block per frame; thread k < J*D owns element k of every hypothesis of the
// frame, writes them, and their mean; the spread needs a sum over D, done in shared memory.
// x, eps, out: [frames, n_hyp, J*D]; mean: [frames, J*D] fp32; spread: [frames, J] fp32.
template <typename xt, typename et>
__global__ void sampler_step_aggregate_kernel(const xt* __restrict__ x, const et* __restrict__ eps, EpsLayout el,
                                              xt* __restrict__ out, float* __restrict__ mean,
                                              float* __restrict__ spread, int64_t n_hyp, int J, int D,
                                              const int64_t* __restrict__ rng_state, int64_t counter_offset,
                                              SamplerCoefs c) {
  extern __shared__ float sq[];  // [J*D]
  const int64_t f = blockIdx.x;
  const int JD = J * D;
  const uint64_t seed = static_cast<uint64_t>(rng_state[0]);
  const uint64_t base = static_cast<uint64_t>(rng_state[1]) + static_cast<uint64_t>(counter_offset);
  for (int k = threadIdx.x; k < JD; k += blockDim.x) {
    float sum = 0.0f;
    for (int64_t n = 0; n < n_hyp; ++n) {
      const int64_t e = (f * n_hyp + n) * JD + k;
      const float z = c.sigma != 0.0f ? philox_normal(seed, base + static_cast<uint64_t>(e)) : 0.0f;
      const float ev = static_cast<float>(eps[el.at(f * n_hyp + n, k)]);
      const xt v = static_cast<xt>(sampler_update(static_cast<float>(x[e]), ev, z, c));
      out[e] = v;
      sum += static_cast<float>(v);
    }
    const float mu = sum / static_cast<float>(n_hyp);
    mean[f * JD + k] = mu;
    float s = 0.0f;
    for (int64_t n = 0; n < n_hyp; ++n) {
      const float d = static_cast<float>(out[(f * n_hyp + n) * JD + k]) - mu;
      s += d * d;
    }
    sq[k] = s;
  }
  __syncthreads();
  for (int j = threadIdx.x; j < J; j += blockDim.x) {
    float s = 0.0f;
    for (int d = 0; d < D; ++d) s += sq[j * D + d];
    spread[f * J + j] = sqrtf(s / static_cast<float>(n_hyp));
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> sampler_step_cuda(
    const at::Tensor& x_, const at::Tensor& eps_, const at::Tensor& rng_state, int64_t counter_offset,
    double sqrt_abar, double sqrt_1m_abar, double c_x0, double c_eps, double sigma, double clip, int64_t n_hyp,
    bool aggregate) {
  check_sampler_args(x_, eps_, rng_state, n_hyp, aggregate);
  const c10::cuda::CUDAGuard guard(x_.device());
  const at::Tensor x = x_.contiguous(), eps = eps_;  // eps through its strides
  const int64_t M = x.size(0), J = x.size(1), D = x.size(2);
  const EpsLayout el{eps.stride(0), eps.stride(1), eps.stride(2), static_cast<int>(D)};
  at::Tensor out = at::empty_like(x);
  const int64_t frames = aggregate ? M / n_hyp : 0;
  at::Tensor mean = aggregate ? at::empty({frames, J, D}, x.options().dtype(at::kFloat)) : at::empty({0}, x.options());
  at::Tensor spread = aggregate ? at::empty({frames, J}, x.options().dtype(at::kFloat)) : at::empty({0}, x.options());
  const SamplerCoefs c{static_cast<float>(sqrt_abar), static_cast<float>(sqrt_1m_abar), static_cast<float>(c_x0),
                       static_cast<float>(c_eps),     static_cast<float>(sigma),        static_cast<float>(clip)};
  const int64_t numel = x.numel();
  auto stream = c10::cuda::getCurrentCUDAStream();
  if (numel > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "sampler_step_cuda_x", [&] {
      using xt = scalar_t;
      AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, eps.scalar_type(), "sampler_step_cuda_eps", [&] {
        if (aggregate) {
          const int JD = static_cast<int>(J * D);
          const int threads = std::min(1024, ((JD + 31) / 32) * 32);
          sampler_step_aggregate_kernel<xt, scalar_t><<<frames, threads, JD * sizeof(float), stream>>>(
              x.data_ptr<xt>(), eps.data_ptr<scalar_t>(), el, out.data_ptr<xt>(), mean.data_ptr<float>(),
              spread.data_ptr<float>(), n_hyp, static_cast<int>(J), static_cast<int>(D),
              rng_state.data_ptr<int64_t>(), counter_offset, c);
        } else {
          const int64_t blocks = (numel + kThreads - 1) / kThreads;
          sampler_step_kernel<xt, scalar_t><<<blocks, kThreads, 0, stream>>>(
              x.data_ptr<xt>(), eps.data_ptr<scalar_t>(), el, out.data_ptr<xt>(), numel, static_cast<int>(J * D),
              rng_state.data_ptr<int64_t>(), counter_offset, c);
        }
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
    });
  }
  if (aggregate) {
    mean = mean.to(x.scalar_type());
    spread = spread.to(x.scalar_type());
  }
  return {out, mean, spread};
}

}  // namespace

TORCH_LIBRARY_IMPL(diffupose, CUDA, m) { m.impl("sampler_step", &sampler_step_cuda); }

}  // namespace diffupose
