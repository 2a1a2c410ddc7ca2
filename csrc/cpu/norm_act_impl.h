// The training batch norm's passes, shared by diffupose::norm_act (csrc/norm_act_cpu.cpp, the norm
// as an op of its own) and diffupose::mgcn_norm (csrc/mgcn_cpu.cpp, the norm fused with the graph
// convolution before it). For pre [B, J, C] viewed as n = B*J rows (the math: norm_act_cpu.cpp):
//   norm_apply   out = act(pre * K_b + C_b) + residual, one region over tiles of samples
//   norm_dy      dz through the activation, the FiLM's gradients, dy and its two reductions
//                (dbeta, dgamma), one region; dpre = rstd * gamma * (dy - (dbeta + xhat dgamma) / n)
//                is the caller's (norm_act: a pass of its own; mgcn_norm: as the convolution's
//                backward loads its rows)
// Reductions go per tile of kNormTileSamples samples into the tile's own slot, summed in tile order
// (cpu/parallel_claim.h): the result does not depend on the thread count.
#pragma once
#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "cpu/flush_denormals.h"
#include "cpu/mgcn_rows.h"
#include "cpu/parallel_claim.h"

namespace diffupose {
namespace norm_act_impl {

constexpr int64_t kNormTileSamples = 8;  // samples per partial-sum slot

inline int64_t norm_tiles(int64_t B) { return (B + kNormTileSamples - 1) / kNormTileSamples; }

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

// out [B, J, C] = act(pre * K_b + C_b) + residual (res nullable; ss nullable, ss_rows 1 or B).
template <typename T, typename xt>
void norm_apply(const xt* pp, const T* k, const T* c0, const xt* ssp, int64_t ss_rows, const xt* rp, xt* out,
                int64_t B, int64_t J, int64_t C, int act) {
  const int64_t tiles = norm_tiles(B);
  parallel_claim(tiles, [&](const auto& next) {
    const ScopedFlushDenormals ftz;  // the silu rows' denormals (cpu/flush_denormals.h)
    std::vector<T> K(C), Cc(C), s1(C), pv(C), u(C);
    for (int64_t t; (t = next()) < tiles;) {
      const int64_t b0 = t * kNormTileSamples, b1 = std::min(B, b0 + kNormTileSamples);
      for (int64_t b = b0; b < b1; ++b) {
        if (b == b0 || ss_rows > 1)
          sample_map<T, xt>(K.data(), Cc.data(), s1.data(), k, c0, ssp ? ssp + (ss_rows > 1 ? b : 0) * 2 * C : nullptr,
                            C);
        for (int64_t j = 0; j < J; ++j) {
          const int64_t o_ = (b * J + j) * C;
          epilogue_into<T, xt>(out + o_, opmath_row<T, xt>(pp + o_, pv.data(), C), K.data(), Cc.data(),
                               rp ? rp + o_ : nullptr, u.data(), C, act);
        }
      }
    }
  });
}

// The backward's first pass. dy [B, J, C] opmath; tot [slot_len]: dbeta [C], dgamma [C], then
// dscale_shift [2, C] when scale_shift is one broadcast row; dssb [B, 2, C] when it has B rows.
template <typename T>
struct NormDy {
  at::Tensor dy, tot, dssb;
};

template <typename T, typename xt>
NormDy<T> norm_dy(const xt* gp, const xt* pp, const NormMap<T>& nm, const T* mu, const xt* ssp, int64_t ss_rows,
                  int64_t B, int64_t J, int64_t C, int act, at::TensorOptions o) {
  const T *k = nm.k.template data_ptr<T>(), *c0 = nm.c0.template data_ptr<T>(), *rstd = nm.rstd.template data_ptr<T>();
  const int64_t tiles = norm_tiles(B);
  const int64_t slot_len = 2 * C + (ss_rows == 1 ? 2 * C : 0);
  // slots and dssb are zeroed per tile in the region below (no fork-join of their own)
  at::Tensor slots = at::empty({tiles, slot_len}, o);
  NormDy<T> r{at::empty({B, J, C}, o), at::empty({slot_len}, o), ss_rows > 1 ? at::empty({B, 2, C}, o) : at::Tensor()};
  T *sp = slots.data_ptr<T>(), *dyp = r.dy.template data_ptr<T>();
  T* dssbp = r.dssb.defined() ? r.dssb.template data_ptr<T>() : nullptr;
  parallel_claim(tiles, [&](const auto& next) {
    const ScopedFlushDenormals ftz;
    std::vector<T> K(C), Cc(C), s1(C), pv(C), u(C);
    for (int64_t t; (t = next()) < tiles;) {
      T* db = sp + t * slot_len;
      T* dg = db + C;
      const int64_t b_end = std::min(B, (t + 1) * kNormTileSamples);
      std::fill(db, db + slot_len, T(0));
      if (dssbp) std::fill(dssbp + t * kNormTileSamples * 2 * C, dssbp + b_end * 2 * C, T(0));
      for (int64_t b = t * kNormTileSamples; b < b_end; ++b) {
        if (b == t * kNormTileSamples || ss_rows > 1)
          sample_map<T, xt>(K.data(), Cc.data(), s1.data(), k, c0, ssp ? ssp + (ss_rows > 1 ? b : 0) * 2 * C : nullptr,
                            C);
        T* dsc = ss_rows == 1 ? dg + C : (ss_rows > 1 ? dssbp + b * 2 * C : nullptr);
        for (int64_t j = 0; j < J; ++j) {
          const int64_t o_ = (b * J + j) * C;
          T* dz = dyp + o_;
          for (int64_t c = 0; c < C; ++c) dz[c] = static_cast<T>(gp[o_ + c]);
          const T* prow = opmath_row<T, xt>(pp + o_, pv.data(), C);
          rows_of<T>().bwd(dz, u.data(), prow, K.data(), Cc.data(), C, act);
          rows_of<T>().norm_bwd(dz, prow, k, c0, dsc ? s1.data() : nullptr, dsc, db, dg, mu, rstd, C);
        }
      }
    }
  });
  sum_parts(r.tot.template data_ptr<T>(), sp, tiles, slot_len, slot_len);  // fixed order over the tiles
  return r;
}

// dpre = rstd * gamma * (dy - dbn - xhat * dgn) per row (dbn, dgn = dbeta / n, dgamma / n; tot as
// norm_dy returns it; dpre may be dy): norm_act's second pass, mgcn_norm's load of dpre.
template <typename T>
struct NormDpre {
  at::Tensor gamma, dbn, dgn;  // [C] opmath (held for the pointers below)
  const T *mu, *rstd, *gp, *dbnp, *dgnp;
  void row(T* dpre, const T* dy, const T* pre, int64_t C) const {
    rows_of<T>().norm_dpre(dpre, dy, pre, mu, rstd, gp, dbnp, dgnp, C);
  }
};

template <typename T>
NormDpre<T> norm_dpre_coefs(const NormMap<T>& nm, const T* mu, const at::Tensor& tot, const at::Tensor& gamma,
                            int64_t n, at::ScalarType op) {
  const int64_t C = nm.k.numel();
  const double inv = 1.0 / static_cast<double>(n);
  NormDpre<T> r{gamma.detach().to(op).contiguous(), tot.narrow(0, 0, C) * inv, tot.narrow(0, C, C) * inv, mu,
                 nm.rstd.template data_ptr<T>()};
  r.gp = r.gamma.template data_ptr<T>();
  r.dbnp = r.dbn.template data_ptr<T>();
  r.dgnp = r.dgn.template data_ptr<T>();
  return r;
}

// (dgamma, dbeta, dscale_shift) in the parameters' and scale_shift's dtypes from norm_dy's sums;
// dscale_shift empty (options `empty_like`) without a scale_shift.
template <typename T>
std::tuple<at::Tensor, at::Tensor, at::Tensor> norm_param_grads(const NormDy<T>& nd, int64_t C, const at::Tensor& gamma,
                                                                const at::Tensor& beta, const at::Tensor& ss,
                                                                int64_t ss_rows, at::TensorOptions empty_like) {
  at::Tensor dss;
  if (ss_rows == 1) dss = nd.tot.narrow(0, 2 * C, 2 * C).view({1, 2, C}).to(ss.scalar_type());
  else if (ss_rows > 1) dss = nd.dssb.to(ss.scalar_type());
  else dss = at::empty({0}, empty_like);
  return {nd.tot.narrow(0, C, C).to(gamma.scalar_type()), nd.tot.narrow(0, 0, C).to(beta.scalar_type()), dss};
}

}  // namespace norm_act_impl
}  // namespace diffupose
