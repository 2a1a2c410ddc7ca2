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
// kTileSamples samples into the tile's own slot, summed in tile order afterwards: the result does
// not depend on the thread count (threads claim tiles as they come: cpu/parallel_claim.h).
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
#include "cpu/parallel_claim.h"

namespace diffupose {
namespace {

constexpr int64_t kTileSamples = 8;  // samples per partial-sum slot

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

// Row r of pre in opmath: the row itself when it is already (fp32, fp64), else widened into buf.
template <typename T, typename xt>
const T* opmath_row(const xt* row, T* buf, int64_t C) {
  if constexpr (std::is_same_v<T, xt>) {
    return row;
  } else {
    for (int64_t c = 0; c < C; ++c) buf[c] = static_cast<T>(row[c]);
    return buf;
  }
}

// out = act(pre * K + Cc) (+ res) for one row; u: an opmath scratch row (half outputs only).
template <typename T, typename xt>
void epilogue_into(xt* out, const T* pre, const T* K, const T* Cc, const xt* res, T* u, int64_t C, int act) {
  if constexpr (std::is_same_v<T, xt>) {  // straight into out
    rows_of<T>().fwd(out, pre, K, Cc, C, act);
    if (res)
      for (int64_t c = 0; c < C; ++c) out[c] += res[c];
  } else {
    rows_of<T>().fwd(u, pre, K, Cc, C, act);
    for (int64_t c = 0; c < C; ++c) out[c] = static_cast<xt>(res ? u[c] + static_cast<T>(res[c]) : u[c]);
  }
}

// The per-channel affine map of sample b: z = pre * K + Cc (and scale1 = 1 + scale, for the
// backward). k, c0: the normalisation's own map, rstd * gamma and beta - mean * rstd * gamma.
template <typename T, typename xt>
void sample_map(T* K, T* Cc, T* scale1, const T* k, const T* c0, const xt* ss, int64_t C) {
  if (ss == nullptr) {
    for (int64_t c = 0; c < C; ++c) {
      K[c] = k[c];
      Cc[c] = c0[c];
      scale1[c] = T(1);
    }
    return;
  }
  for (int64_t c = 0; c < C; ++c) {
    const T s1 = T(1) + static_cast<T>(ss[c]);
    scale1[c] = s1;
    K[c] = k[c] * s1;
    Cc[c] = c0[c] * s1 + static_cast<T>(ss[C + c]);
  }
}

// The normalisation's map from the batch statistics: k = rstd * gamma, c0 = beta - mean * k.
// One loop over the C channels (five ATen calls of a few us each before, twice per layer and step).
template <typename T>
struct NormMap {
  at::Tensor k, c0, rstd;  // [C] each, opmath (rows of one [3, C] tensor)
};

template <typename T>
NormMap<T> norm_map(const at::Tensor& mean, const at::Tensor& var, const at::Tensor& gamma, const at::Tensor& beta,
                    double eps, at::ScalarType op) {
  const at::Tensor mu = mean.to(op).contiguous(), v = var.to(op).contiguous(),
                   g = gamma.detach().to(op).contiguous(), b = beta.detach().to(op).contiguous();
  const int64_t C = mu.numel();
  at::Tensor all = at::empty({3, C}, mu.options());
  const T *mup = mu.data_ptr<T>(), *vp = v.data_ptr<T>(), *gp = g.data_ptr<T>(), *bp = b.data_ptr<T>();
  T *rp = all.data_ptr<T>(), *kp = rp + C, *cp = kp + C;
  for (int64_t c = 0; c < C; ++c) {
    rp[c] = T(1) / std::sqrt(vp[c] + static_cast<T>(eps));
    kp[c] = rp[c] * gp[c];
    cp[c] = bp[c] - mup[c] * kp[c];
  }
  return {all[1], all[2], all[0]};
}

// Per-channel sums over the rows of pre, per tile of samples, in tile order. centre: subtract
// it first and square (the variance's pass), else plain sums (the mean's).
template <typename T, typename xt>
at::Tensor channel_sums(const xt* pre, const T* centre, int64_t B, int64_t J, int64_t C, at::TensorOptions o) {
  const int64_t tiles = (B + kTileSamples - 1) / kTileSamples;
  at::Tensor slots = at::empty({tiles, C}, o);  // zeroed per tile in the region (no fork-join of its own)
  T* sp = slots.data_ptr<T>();
  parallel_claim(tiles, [&](const auto& next) {
    std::vector<T> buf(C);
    for (int64_t t; (t = next()) < tiles;) {
      T* acc = sp + t * C;
      std::fill(acc, acc + C, T(0));
      const int64_t r0 = t * kTileSamples * J, r1 = std::min(B, (t + 1) * kTileSamples) * J;
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
    const xt* ssp = d.ss_rows ? ss.data_ptr<xt>() : nullptr;
    const xt* rp = res.defined() ? res.data_ptr<xt>() : nullptr;
    xt* op_ = out.data_ptr<xt>();
    const int64_t tiles = (B + kTileSamples - 1) / kTileSamples;
    parallel_claim(tiles, [&](const auto& next) {
      const ScopedFlushDenormals ftz;  // the silu rows' denormals (cpu/flush_denormals.h)
      std::vector<T> K(C), Cc(C), s1(C), pv(C), u(C);
      for (int64_t t; (t = next()) < tiles;) {
        const int64_t b0 = t * kTileSamples, b1 = std::min(B, b0 + kTileSamples);
        for (int64_t b = b0; b < b1; ++b) {
          if (b == b0 || d.ss_rows > 1)
            sample_map<T, xt>(K.data(), Cc.data(), s1.data(), k, c0,
                              ssp ? ssp + (d.ss_rows > 1 ? b : 0) * 2 * C : nullptr, C);
          for (int64_t j = 0; j < J; ++j) {
            const int64_t o_ = (b * J + j) * C;
            epilogue_into<T, xt>(op_ + o_, opmath_row<T, xt>(pp + o_, pv.data(), C), K.data(), Cc.data(),
                                 rp ? rp + o_ : nullptr, u.data(), C, static_cast<int>(act));
          }
        }
      }
    });
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
    const T *k = nm.k.data_ptr<T>(), *c0 = nm.c0.data_ptr<T>(), *rstd = nm.rstd.data_ptr<T>(),
            *mu = mean.data_ptr<T>();
    const int64_t tiles = (B + kTileSamples - 1) / kTileSamples;
    // per tile: dbeta [C], dgamma [C], and dscale_shift [2, C] when it is one broadcast row
    const int64_t slot_len = 2 * C + (d.ss_rows == 1 ? 2 * C : 0);
    // slots and dssb are zeroed per tile in the region below (no fork-join of their own)
    at::Tensor slots = at::empty({tiles, slot_len}, o);
    at::Tensor dy = at::empty({B, J, C}, o);  // dy, then dpre in place
    at::Tensor dssb = d.ss_rows > 1 ? at::empty({B, 2, C}, o) : at::Tensor();
    const xt *pp = pre.data_ptr<xt>(), *gp = g.data_ptr<xt>();
    const xt* ssp = d.ss_rows ? ss.data_ptr<xt>() : nullptr;
    T *sp = slots.data_ptr<T>(), *dyp = dy.data_ptr<T>();
    T* dssbp = dssb.defined() ? dssb.data_ptr<T>() : nullptr;
    // pass 1: dz through the activation, the FiLM's gradients, dy and its two reductions
    parallel_claim(tiles, [&](const auto& next) {
      const ScopedFlushDenormals ftz;
      std::vector<T> K(C), Cc(C), s1(C), pv(C), u(C);
      for (int64_t t; (t = next()) < tiles;) {
        T* db = sp + t * slot_len;
        T* dg = db + C;
        const int64_t b_end = std::min(B, (t + 1) * kTileSamples);
        std::fill(db, db + slot_len, T(0));
        if (dssbp) std::fill(dssbp + t * kTileSamples * 2 * C, dssbp + b_end * 2 * C, T(0));
        for (int64_t b = t * kTileSamples; b < b_end; ++b) {
          if (b == t * kTileSamples || d.ss_rows > 1)
            sample_map<T, xt>(K.data(), Cc.data(), s1.data(), k, c0,
                              ssp ? ssp + (d.ss_rows > 1 ? b : 0) * 2 * C : nullptr, C);
          T* dsc = d.ss_rows == 1 ? dg + C : (d.ss_rows > 1 ? dssbp + b * 2 * C : nullptr);
          for (int64_t j = 0; j < J; ++j) {
            const int64_t o_ = (b * J + j) * C;
            T* dz = dyp + o_;
            for (int64_t c = 0; c < C; ++c) dz[c] = static_cast<T>(gp[o_ + c]);
            const T* prow = opmath_row<T, xt>(pp + o_, pv.data(), C);
            rows_of<T>().bwd(dz, u.data(), prow, K.data(), Cc.data(), C, static_cast<int>(act));
            rows_of<T>().norm_bwd(dz, prow, k, c0, dsc ? s1.data() : nullptr, dsc, db, dg, mu, rstd, C);
          }
        }
      }
    });
    const at::Tensor tot = at::empty({slot_len}, o);
    sum_parts(tot.data_ptr<T>(), sp, tiles, slot_len, slot_len);  // fixed order over the tiles
    dbeta = tot.narrow(0, 0, C).contiguous();
    dgamma = tot.narrow(0, C, C).contiguous();
    // pass 2: dpre = rstd * gamma * (dy - (dbeta + xhat * dgamma) / n), in place
    const double n = static_cast<double>(B * J);
    const at::Tensor gam = gamma.detach().to(op).contiguous(), dbn = dbeta / n, dgn = dgamma / n;
    const T *dbnp = dbn.data_ptr<T>(), *dgnp = dgn.data_ptr<T>(), *gmp = gam.data_ptr<T>();
    constexpr int64_t kRows = 128;  // rows per claim
    const int64_t chunks = (B * J + kRows - 1) / kRows;
    parallel_claim(chunks, [&](const auto& next) {
      std::vector<T> buf(C);
      for (int64_t q; (q = next()) < chunks;)
        for (int64_t r = q * kRows; r < std::min(B * J, (q + 1) * kRows); ++r)
          rows_of<T>().norm_dpre(dyp + r * C, opmath_row<T, xt>(pp + r * C, buf.data(), C), mu, rstd, gmp, dbnp, dgnp, C);
    });
    dpre = dy.to(pre.scalar_type());
    dgamma = dgamma.to(gamma.scalar_type());
    dbeta = dbeta.to(beta.scalar_type());
    if (d.ss_rows == 1) dss = tot.narrow(0, 2 * C, 2 * C).view({1, 2, C}).to(ss.scalar_type());
    else if (d.ss_rows > 1) dss = dssb.to(ss.scalar_type());
    else dss = at::empty({0}, pre.options());
  });
  return {dpre, dgamma, dbeta, dss};
}

}  // namespace

TORCH_LIBRARY_IMPL(diffupose, CPU, m) {
  m.impl("norm_act_fwd", &norm_act_fwd_cpu);
  m.impl("norm_act_bwd", &norm_act_bwd_cpu);
}

}  // namespace diffupose
