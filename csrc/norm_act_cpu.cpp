// Training-mode batch norm with the graph convolution's epilogue, CPU: the kernels of
// diffupose::norm_act_fwd / norm_act_bwd. Contract: csrc/ops.cpp; reference:
// diffupose/ops/norm_act.py::norm_act_ref. For pre [B, J, C] viewed as n = B*J rows:
//
//   mean, var = per-channel batch mean and (biased) variance over the n rows
//   y   = (pre - mean) * rstd * gamma + beta,   rstd = 1 / sqrt(var + eps)
//   out = act(y * (1 + scale_b) + shift_b) + residual
//
// Why an op: in a training layer the batch norm, the FiLM and the activation were five to seven
// ATen passes over [B, J, C] each way (plus their saved tensors); here the forward reads pre three
// times (sum, centred sum of squares, then the epilogue, per sample: y and z are never stored) and
// writes out once, and the backward reads pre and grad_out once, then its own dy once.
// Per sample the normalisation and the FiLM are one affine map per channel,
//   z = pre * K_b + C_b,  K_b = rstd * gamma * scale1_b,  C_b = (beta - mean * rstd * gamma) * scale1_b + shift_b,
// so the epilogue runs the graph convolution's vectorised rows (cpu/mgcn_rows.h, chosen per
// instruction set at run time).
//
// Backward (xhat = (pre - mean) * rstd):
//   dz = grad_out * act'(z);  dscale_b = sum_j dz * y;  dshift_b = sum_j dz;  dy = dz * scale1_b
//   dbeta = sum dy;  dgamma = sum dy * xhat;  dpre = rstd * gamma * (dy - (dbeta + xhat * dgamma) / n)
// The residual's gradient is grad_out itself (Python). Reductions over the batch go per tile of
// kNormTileSamples samples into the tile's own slot, summed in tile order afterwards: the result
// does not depend on the thread count (threads claim tiles as they come: cpu/parallel_claim.h).
// The passes are in cpu/norm_act_impl.h (diffupose::mgcn_norm runs them fused with the graph
// convolution before the norm: csrc/mgcn_cpu.cpp).
// Everything accumulates in opmath (fp32; fp64 for fp64).
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/extension.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "cpu/flush_denormals.h"
#include "cpu/mgcn_rows.h"
#include "cpu/norm_act_impl.h"
#include "cpu/parallel_claim.h"

namespace diffupose {
namespace {

using namespace norm_act_impl;  // the passes (cpu/norm_act_impl.h)

struct NormActDims {
  int64_t B, J, C, ss_rows;  // ss_rows: 0 without scale-shift, else 1 or B
};

NormActDims check_norm_act_args(const at::Tensor& pre, const at::Tensor& gamma, const at::Tensor& beta,
                                const c10::optional<at::Tensor>& scale_shift, int64_t act) {
  TORCH_CHECK(pre.dim() == 3, "norm_act: pre must be [B, J, C], got ", pre.sizes());
  const int64_t B = pre.size(0), J = pre.size(1), C = pre.size(2);
  TORCH_CHECK(B * J > 1, "norm_act: a batch norm in training needs more than one row per channel, got ",
              pre.sizes());
  TORCH_CHECK(pre.is_floating_point(), "norm_act: floating-point pre expected");
  for (const at::Tensor* t : {&gamma, &beta}) {
    TORCH_CHECK(t->dim() == 1 && t->size(0) == C, "norm_act: gamma and beta must be [", C, "], got ", t->sizes());
    TORCH_CHECK(t->is_floating_point() && t->device() == pre.device(), "norm_act: gamma, beta: float on ",
                pre.device());
  }
  TORCH_CHECK(act >= 0 && act <= 2, "norm_act: act must be 0 (none), 1 (relu) or 2 (silu), got ", act);
  int64_t ss_rows = 0;
  if (scale_shift.has_value()) {
    const at::Tensor& ss = *scale_shift;
    TORCH_CHECK(ss.dim() == 3 && (ss.size(0) == 1 || ss.size(0) == B) && ss.size(1) == 2 && ss.size(2) == C,
                "norm_act: scale_shift must be [1 or ", B, ", 2, ", C, "], got ", ss.sizes());
    TORCH_CHECK(ss.scalar_type() == pre.scalar_type() && ss.device() == pre.device(),
                "norm_act: scale_shift must have pre's dtype and device");
    ss_rows = ss.size(0);
  }
  return {B, J, C, ss_rows};
}

// Per-channel sums over the rows of pre, per tile of samples, in tile order. centre: subtract
// it first and square (the variance's pass), else plain sums (the mean's).
template <typename T, typename xt>
at::Tensor channel_sums(const xt* pre, const T* centre, int64_t B, int64_t J, int64_t C, at::TensorOptions o) {
  const int64_t tiles = norm_tiles(B);
  at::Tensor slots = at::empty({tiles, C}, o);  // zeroed per tile in the region (no fork-join of its own)
  T* sp = slots.data_ptr<T>();
  parallel_claim(tiles, [&](const auto& next) {
    std::vector<T> buf(C);
    for (int64_t t; (t = next()) < tiles;) {
      T* acc = sp + t * C;
      std::fill(acc, acc + C, T(0));
      const int64_t r0 = t * kNormTileSamples * J, r1 = std::min(B, (t + 1) * kNormTileSamples) * J;
      for (int64_t r = r0; r < r1; ++r) rows_of<T>().norm_sum(acc, opmath_row<T, xt>(pre + r * C, buf.data(), C), centre, C);
    }
  });
  at::Tensor tot = at::empty({C}, o);
  sum_parts(tot.data_ptr<T>(), sp, tiles, C, C);  // fixed order over the tiles
  return tot;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> norm_act_fwd_cpu(const at::Tensor& pre_, const at::Tensor& gamma,
                                                                const at::Tensor& beta,
                                                                const c10::optional<at::Tensor>& scale_shift,
                                                                const c10::optional<at::Tensor>& residual, int64_t act,
                                                                double eps) {
  const NormActDims d = check_norm_act_args(pre_, gamma, beta, scale_shift, act);
  const at::Tensor pre = pre_.detach().contiguous();  // ATen calls below are the kernel's internals
  const at::Tensor ss = scale_shift.has_value() ? scale_shift->detach().contiguous() : at::Tensor();
  at::Tensor res;
  if (residual.has_value()) {
    res = residual->detach().contiguous();
    TORCH_CHECK(res.sizes() == pre.sizes() && res.scalar_type() == pre.scalar_type() && res.device() == pre.device(),
                "norm_act: residual must be ", pre.sizes(), " with pre's dtype and device, got ", res.sizes());
  }
  const int64_t B = d.B, J = d.J, C = d.C;
  at::Tensor out = at::empty_like(pre), mean, var;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, pre.scalar_type(), "norm_act_fwd_cpu", [&] {
    using T = at::opmath_type<scalar_t>;
    using xt = scalar_t;
    const at::ScalarType op = c10::CppTypeToScalarType<T>::value;
    const auto o = pre.options().dtype(op);
    const xt* pp = pre.data_ptr<xt>();
    const double n = static_cast<double>(B * J);
    mean = channel_sums<T, xt>(pp, nullptr, B, J, C, o) / n;
    var = channel_sums<T, xt>(pp, mean.data_ptr<T>(), B, J, C, o) / n;  // two passes: no cancellation
    const NormMap<T> nm = norm_map<T>(mean, var, gamma, beta, eps, op);
    const T *k = nm.k.data_ptr<T>(), *c0 = nm.c0.data_ptr<T>();
    norm_apply<T, xt>(pp, k, c0, d.ss_rows ? ss.data_ptr<xt>() : nullptr, d.ss_rows,
                      res.defined() ? res.data_ptr<xt>() : nullptr, out.data_ptr<xt>(), B, J, C, static_cast<int>(act));
  });
  return {out, mean, var};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> norm_act_bwd_cpu(
    const at::Tensor& grad_out_, const at::Tensor& pre_, const at::Tensor& gamma, const at::Tensor& beta,
    const at::Tensor& mean_, const at::Tensor& var_, const c10::optional<at::Tensor>& scale_shift, int64_t act,
    double eps) {
  const NormActDims d = check_norm_act_args(pre_, gamma, beta, scale_shift, act);
  TORCH_CHECK(grad_out_.sizes() == pre_.sizes(), "norm_act_bwd: grad_out must be ", pre_.sizes(), ", got ",
              grad_out_.sizes());
  TORCH_CHECK(mean_.dim() == 1 && mean_.size(0) == d.C && var_.dim() == 1 && var_.size(0) == d.C,
              "norm_act_bwd: mean and var must be [", d.C, "]");
  const at::Tensor pre = pre_.detach().contiguous(), g = grad_out_.detach().to(pre.scalar_type()).contiguous();
  const at::Tensor ss = scale_shift.has_value() ? scale_shift->detach().contiguous() : at::Tensor();
  const int64_t B = d.B, J = d.J, C = d.C;
  at::Tensor dpre, dgamma, dbeta, dss;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, pre.scalar_type(), "norm_act_bwd_cpu", [&] {
    using T = at::opmath_type<scalar_t>;
    using xt = scalar_t;
    const at::ScalarType op = c10::CppTypeToScalarType<T>::value;
    const auto o = pre.options().dtype(op);
    const at::Tensor mean = mean_.detach().to(op).contiguous();
    const NormMap<T> nm = norm_map<T>(mean, var_.detach(), gamma, beta, eps, op);
    const T* mu = mean.data_ptr<T>();
    const NormDy<T> nd = norm_dy<T, xt>(g.data_ptr<xt>(), pre.data_ptr<xt>(), nm, mu,
                                        d.ss_rows ? ss.data_ptr<xt>() : nullptr, d.ss_rows, B, J, C,
                                        static_cast<int>(act), o);  // pass 1
    // pass 2: dpre = rstd * gamma * (dy - (dbeta + xhat * dgamma) / n), in place
    const NormDpre<T> dp = norm_dpre_coefs<T>(nm, mu, nd.tot, gamma, B * J, op);
    T* dyp = nd.dy.data_ptr<T>();
    const xt* pp = pre.data_ptr<xt>();
    constexpr int64_t kRows = 128;  // rows per claim
    const int64_t chunks = (B * J + kRows - 1) / kRows;
    parallel_claim(chunks, [&](const auto& next) {
      std::vector<T> buf(C);
      for (int64_t q; (q = next()) < chunks;)
        for (int64_t row = q * kRows; row < std::min(B * J, (q + 1) * kRows); ++row)
          dp.row(dyp + row * C, dyp + row * C, opmath_row<T, xt>(pp + row * C, buf.data(), C), C);
    });
    dpre = nd.dy.to(pre.scalar_type());
    std::tie(dgamma, dbeta, dss) = norm_param_grads<T>(nd, C, gamma, beta, ss, d.ss_rows, pre.options());
  });
  return {dpre, dgamma, dbeta, dss};
}

}  // namespace

TORCH_LIBRARY_IMPL(diffupose, CPU, m) {
  m.impl("norm_act_fwd", &norm_act_fwd_cpu);
  m.impl("norm_act_bwd", &norm_act_bwd_cpu);
}

}  // namespace diffupose
