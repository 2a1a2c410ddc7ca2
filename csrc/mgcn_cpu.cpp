// Fused modulated graph convolution, CPU: the kernels of diffupose::mgcn_fwd / mgcn_bwd.
// Contract: csrc/ops.cpp; reference: diffupose/ops/mgcn.py::mgcn_ref; epilogue math shared
// with CUDA: common/mgcn_math.h. For x [B, J, Cin] viewed as R = B*J rows:
//
//   H   = x @ [w0 | w1]                                            [R, 2*Cout]  (one GEMM)
//   pre = diag(a) * (m * H0) + offdiag(a) @ (m * H1) + bias        per sample   [J, Cout]
//   out = act(pre * (1 + scale) + shift) + residual
//
// Tiling. Threads own tiles of whole samples. A tile computes its slice of H with one GEMM
// (at::mm_out into a thread-local buffer: inside at::parallel_for the BLAS call runs on the
// calling thread, so the tiles are the parallelism) and consumes it at once while it is in
// cache: the J x J aggregation, bias and epilogue, one write of out. H never reaches memory.
//
// Backward, per tile: recompute H (only pre is saved), then dpre from the epilogue, the
// modulated gradients dH = [m * a_jj dpre, m * offdiag(a)^T dpre] (written: the two GEMMs
// below need all of it) and the tile's partial sums of dm, da, dbias, dscale_shift in a
// per-tile slot (summed afterwards in a fixed order: results do not depend on the thread
// count). Then dx = dH @ [w0 | w1]^T and [dw0 | dw1] = x^T @ dH, two GEMMs over all rows.
//
// Precision: everything accumulates in opmath (fp32 for fp16/bf16/fp32, fp64 for fp64);
// half inputs are widened once, so the only roundings are the final stores.
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/extension.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "common/mgcn_math.h"
#include "mgcn_check.h"

namespace diffupose {
namespace {

// Rows per tile: big enough for an efficient GEMM, small enough that the tile's H
// [rows, 2*Cout] stays in L2, and at least one tile per thread when the batch allows it.
int64_t samples_per_tile(int64_t B, int64_t J) {
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  const int64_t cap = std::max<int64_t>(1, 256 / std::max<int64_t>(J, 1));
  return std::max<int64_t>(1, std::min(cap, (B + threads - 1) / threads));
}

// exp for the row loops: a Cephes-style polynomial (max error ~2 ulp in float, like libm's) that
// gcc vectorizes at -O3 with the baseline instruction set (no libm call in the loop); the
// scalar expf of StdExp made silu the most expensive part of the epilogue. fp64 keeps std::exp.
struct RowExp {
  float operator()(float v) const {
    v = std::min(std::max(v, -87.0f), 88.0f);
    const float t = v * 1.44269504088896341f + (v >= 0.0f ? 0.5f : -0.5f);
    const int32_t n = static_cast<int32_t>(t);  // round to nearest (truncation of +-0.5)
    const float nf = static_cast<float>(n);
    const float r = (v - nf * 0.693359375f) + nf * 2.12194440e-4f;  // v - n ln2, in two parts
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    const float y = p * r * r + r + 1.0f;
    int32_t bits = (n + 127) << 23;  // 2^n
    float scale;
    std::memcpy(&scale, &bits, sizeof(scale));
    return y * scale;
  }
  double operator()(double v) const { return std::exp(v); }
};

// The epilogue over a row of C channels, in place: u = pre * scale1 + shift (scale1 = 1 + scale),
// then act. One loop per activation so that each is a straight, vectorizable loop.
template <typename T>
void epilogue_row_fwd(T* u, const T* pre, const T* scale1, const T* shift, int64_t C, int act) {
  if (scale1)
    for (int64_t c = 0; c < C; ++c) u[c] = pre[c] * scale1[c] + shift[c];
  else
    for (int64_t c = 0; c < C; ++c) u[c] = pre[c];
  if (act == kActRelu)
    for (int64_t c = 0; c < C; ++c) u[c] = act_fwd<T>(u[c], kActRelu);
  else if (act == kActSilu)
    for (int64_t c = 0; c < C; ++c) u[c] = act_fwd<T>(u[c], kActSilu, RowExp{});
}

// dz = g * act'(u) over a row, in place in g (u as in epilogue_row_fwd, in `u`).
template <typename T>
void epilogue_row_bwd(T* g, T* u, const T* pre, const T* scale1, const T* shift, int64_t C, int act) {
  if (act == kActNone) return;
  if (scale1)
    for (int64_t c = 0; c < C; ++c) u[c] = pre[c] * scale1[c] + shift[c];
  else
    for (int64_t c = 0; c < C; ++c) u[c] = pre[c];
  if (act == kActRelu)
    for (int64_t c = 0; c < C; ++c) g[c] *= act_bwd<T>(u[c], kActRelu);
  else
    for (int64_t c = 0; c < C; ++c) g[c] *= act_bwd<T>(u[c], kActSilu, RowExp{});
}

// A sample's scale-shift widened: scale1 = 1 + scale, shift.
template <typename T, typename xt>
void load_scale_shift(T* scale1, T* shift, const xt* ss, int64_t C) {
  for (int64_t c = 0; c < C; ++c) {
    scale1[c] = T(1) + static_cast<T>(ss[c]);
    shift[c] = static_cast<T>(ss[C + c]);
  }
}

// Parameters widened to opmath and laid out for the inner loops.
template <typename T>
struct Params {
  at::Tensor wcat;              // [Cin, 2*Cout]
  const T* m;                   // [J, Cout]
  const T* a;                   // [J, J]
  const T* bias;                // [Cout] (forward only)
  std::vector<at::Tensor> keep;  // owners of the pointers above
};

template <typename T>
Params<T> widen(const at::Tensor& w, const at::Tensor& m, const at::Tensor& a, const at::Tensor* bias,
                at::ScalarType op) {
  Params<T> p;
  p.wcat = at::cat({w[0], w[1]}, 1).to(op).contiguous();
  at::Tensor mf = m.to(op).contiguous(), af = a.to(op).contiguous();
  p.m = mf.data_ptr<T>();
  p.a = af.data_ptr<T>();
  p.keep = {mf, af};
  p.bias = nullptr;
  if (bias != nullptr) {
    at::Tensor bf = bias->to(op).contiguous();
    p.bias = bf.data_ptr<T>();
    p.keep.push_back(bf);
  }
  return p;
}

// ---------------------------------------------------------------------------------------------
// forward
// ---------------------------------------------------------------------------------------------
template <typename xt>
void mgcn_fwd_cpu_impl(const at::Tensor& xw, const Params<at::opmath_type<xt>>& p, const xt* ss, int64_t ss_rows,
                       const xt* res, xt* out, xt* pre, int64_t B, int64_t J, int64_t Cout, int act) {
  using T = at::opmath_type<xt>;
  const int64_t spt = samples_per_tile(B, J);
  const int64_t tiles = (B + spt - 1) / spt;
  const int64_t C2 = 2 * Cout;
  at::parallel_for(0, tiles, 1, [&](int64_t t0, int64_t t1) {
    at::Tensor H = at::empty({spt * J, C2}, p.wcat.options());  // this thread's tile of x @ [w0 | w1]
    std::vector<T> g1(J * Cout);                               // m * H1 of one sample
    std::vector<T> row(Cout), u(Cout), sc1(Cout), sh(Cout);
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b0 = t * spt, nb = std::min(spt, B - b0);
      at::Tensor Ht = H.narrow(0, 0, nb * J);
      at::mm_out(Ht, xw.narrow(0, b0 * J, nb * J), p.wcat);
      const T* h = Ht.data_ptr<T>();
      for (int64_t s = 0; s < nb; ++s) {
        const int64_t b = b0 + s;
        const T* hs = h + s * J * C2;  // [J, 2*Cout] of this sample
        for (int64_t k = 0; k < J; ++k)
          for (int64_t c = 0; c < Cout; ++c) g1[k * Cout + c] = p.m[k * Cout + c] * hs[k * C2 + Cout + c];
        if (ss_rows && (ss_rows > 1 || s == 0))  // a broadcast row: once per tile
          load_scale_shift(sc1.data(), sh.data(), ss + (ss_rows == 1 ? 0 : b) * 2 * Cout, Cout);
        for (int64_t j = 0; j < J; ++j) {
          const T ajj = p.a[j * J + j];
          for (int64_t c = 0; c < Cout; ++c) row[c] = p.bias[c] + ajj * p.m[j * Cout + c] * hs[j * C2 + c];
          for (int64_t k = 0; k < J; ++k) {
            if (k == j) continue;  // the own joint goes through w0, not w1
            const T ajk = p.a[j * J + k];
            const T* gk = g1.data() + k * Cout;
            for (int64_t c = 0; c < Cout; ++c) row[c] += ajk * gk[c];
          }
          const int64_t o = (b * J + j) * Cout;
          if (pre)
            for (int64_t c = 0; c < Cout; ++c) pre[o + c] = static_cast<xt>(row[c]);
          epilogue_row_fwd<T>(u.data(), row.data(), ss_rows ? sc1.data() : nullptr, sh.data(), Cout, act);
          if (res)
            for (int64_t c = 0; c < Cout; ++c) out[o + c] = static_cast<xt>(u[c] + static_cast<T>(res[o + c]));
          else
            for (int64_t c = 0; c < Cout; ++c) out[o + c] = static_cast<xt>(u[c]);
        }
      }
    }
  });
}

std::tuple<at::Tensor, at::Tensor> mgcn_fwd_cpu(const at::Tensor& x_, const at::Tensor& w_, const at::Tensor& m_,
                                                const at::Tensor& a_, const at::Tensor& bias_,
                                                const c10::optional<at::Tensor>& scale_shift,
                                                const c10::optional<at::Tensor>& residual, int64_t act, bool save_pre) {
  const MgcnDims d = check_mgcn_args(x_, w_, m_, a_, scale_shift, act);
  const at::Tensor w = w_.detach(), m = m_.detach(), a = a_.detach();
  // The ATen calls below are internals of the kernel: detached inputs keep autograd out of them,
  // also on the worker threads of at::parallel_for (grad mode is thread-local).
  check_mgcn_fwd_args(d, x_, bias_, residual);
  const at::Tensor x = x_.detach().contiguous(), bias = bias_.detach();
  at::Tensor out = at::empty({d.B, d.J, d.Cout}, x.options());
  at::Tensor pre = save_pre ? at::empty({d.B, d.J, d.Cout}, x.options()) : at::empty({0}, x.options());
  if (d.B == 0) return {out, pre};
  const at::Tensor ss = scale_shift.has_value() ? scale_shift->detach().contiguous() : at::Tensor();
  const at::Tensor res = residual.has_value() ? residual->detach().contiguous() : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "mgcn_fwd_cpu", [&] {
    using T = at::opmath_type<scalar_t>;
    const at::ScalarType op = c10::CppTypeToScalarType<T>::value;
    const Params<T> p = widen<T>(w, m, a, &bias, op);
    const at::Tensor xw = x.view({d.B * d.J, d.Cin}).to(op);
    mgcn_fwd_cpu_impl<scalar_t>(xw, p, d.ss_rows ? ss.data_ptr<scalar_t>() : nullptr, d.ss_rows,
                                res.defined() ? res.data_ptr<scalar_t>() : nullptr, out.data_ptr<scalar_t>(),
                                save_pre ? pre.data_ptr<scalar_t>() : nullptr, d.B, d.J, d.Cout, static_cast<int>(act));
  });
  return {out, pre};
}

// ---------------------------------------------------------------------------------------------
// backward
// ---------------------------------------------------------------------------------------------
// Per-tile partial sums, one slot per tile (fixed-order reduction afterwards).
template <typename T>
struct BwdPartials {
  T* dm;    // [tiles, J, Cout]
  T* da;    // [tiles, J, J]
  T* db;    // [tiles, Cout]
  T* dss;   // [tiles, 2, Cout] when scale_shift is broadcast (1 row), else unused
  T* dssb;  // [B, 2, Cout] when scale_shift has a row per sample, else unused
};

template <typename xt>
void mgcn_bwd_cpu_impl(const at::Tensor& xw, const Params<at::opmath_type<xt>>& p, const xt* g, const xt* pre,
                       const xt* ss, int64_t ss_rows, at::opmath_type<xt>* dH, const BwdPartials<at::opmath_type<xt>>& P,
                       int64_t spt, int64_t B, int64_t J, int64_t Cout, int act) {
  using T = at::opmath_type<xt>;
  const int64_t tiles = (B + spt - 1) / spt;
  const int64_t C2 = 2 * Cout;
  at::parallel_for(0, tiles, 1, [&](int64_t t0, int64_t t1) {
    at::Tensor H = at::empty({spt * J, C2}, p.wcat.options());
    std::vector<T> dpre(J * Cout), g1(J * Cout), pv(Cout), u(Cout), sc1(Cout), sh(Cout);
    for (int64_t t = t0; t < t1; ++t) {
      T* dm = P.dm + t * J * Cout;
      T* da = P.da + t * J * J;
      T* db = P.db + t * Cout;
      T* dssp = P.dss ? P.dss + t * 2 * Cout : nullptr;
      std::fill(dm, dm + J * Cout, T(0));
      std::fill(da, da + J * J, T(0));
      std::fill(db, db + Cout, T(0));
      if (dssp) std::fill(dssp, dssp + 2 * Cout, T(0));
      const int64_t b0 = t * spt, nb = std::min(spt, B - b0);
      at::Tensor Ht = H.narrow(0, 0, nb * J);
      at::mm_out(Ht, xw.narrow(0, b0 * J, nb * J), p.wcat);
      const T* h = Ht.data_ptr<T>();
      for (int64_t s = 0; s < nb; ++s) {
        const int64_t b = b0 + s;
        const T* hs = h + s * J * C2;
        T* dhs = dH + b * J * C2;  // [J, 2*Cout] of this sample
        T* dsc = ss_rows == 1 ? dssp : (ss_rows ? P.dssb + b * 2 * Cout : nullptr);
        if (ss_rows > 1) std::fill(dsc, dsc + 2 * Cout, T(0));
        if (ss_rows && (ss_rows > 1 || s == 0))  // a broadcast row: once per tile
          load_scale_shift(sc1.data(), sh.data(), ss + (ss_rows == 1 ? 0 : b) * 2 * Cout, Cout);
        // dpre through the epilogue; dscale_shift and dbias
        for (int64_t j = 0; j < J; ++j) {
          const int64_t o = (b * J + j) * Cout;
          T* dz = dpre.data() + j * Cout;  // dz first, dpre = dz * (1 + scale) in place below
          for (int64_t c = 0; c < Cout; ++c) {
            pv[c] = static_cast<T>(pre[o + c]);
            dz[c] = static_cast<T>(g[o + c]);
          }
          epilogue_row_bwd<T>(dz, u.data(), pv.data(), ss_rows ? sc1.data() : nullptr, sh.data(), Cout, act);
          if (dsc)
            for (int64_t c = 0; c < Cout; ++c) {
              dsc[c] += dz[c] * pv[c];
              dsc[Cout + c] += dz[c];
              dz[c] *= sc1[c];
            }
          for (int64_t c = 0; c < Cout; ++c) db[c] += dz[c];
        }
        for (int64_t k = 0; k < J; ++k)
          for (int64_t c = 0; c < Cout; ++c) g1[k * Cout + c] = p.m[k * Cout + c] * hs[k * C2 + Cout + c];
        for (int64_t j = 0; j < J; ++j) {
          const T* dpj = dpre.data() + j * Cout;
          const T* mj = p.m + j * Cout;
          const T ajj = p.a[j * J + j];
          // self term: dG0 = a_jj dpre_j; dH0 = m_j dG0; dm_j += dG0 H0_j; da_jj += <dpre_j, m_j H0_j>
          T* dh0 = dhs + j * C2;
          T* dmj = dm + j * Cout;
          T dajj = 0;
#pragma omp simd reduction(+ : dajj)  // lets the dot product vectorize (reassociation)
          for (int64_t c = 0; c < Cout; ++c) {
            const T h0 = hs[j * C2 + c];
            const T dg0 = ajj * dpj[c];
            dh0[c] = mj[c] * dg0;
            dmj[c] += dg0 * h0;
            dajj += dpj[c] * mj[c] * h0;
          }
          da[j * J + j] += dajj;
          // neighbour terms, seen from the source joint k: dG1_k = sum_{j != k} a_jk dpre_j
          T* dh1 = dhs + j * C2 + Cout;
          std::fill(dh1, dh1 + Cout, T(0));
        }
        for (int64_t j = 0; j < J; ++j) {
          const T* dpj = dpre.data() + j * Cout;
          for (int64_t k = 0; k < J; ++k) {
            if (k == j) continue;
            const T ajk = p.a[j * J + k];
            T* dh1 = dhs + k * C2 + Cout;  // accumulates dG1_k for now
            const T* gk = g1.data() + k * Cout;
            T dajk = 0;
#pragma omp simd reduction(+ : dajk)
            for (int64_t c = 0; c < Cout; ++c) {
              dh1[c] += ajk * dpj[c];
              dajk += dpj[c] * gk[c];
            }
            da[j * J + k] += dajk;
          }
        }
        for (int64_t k = 0; k < J; ++k) {  // dm_k += dG1_k H1_k; dH1_k = m_k dG1_k
          T* dh1 = dhs + k * C2 + Cout;
          T* dmk = dm + k * Cout;
          const T* mk = p.m + k * Cout;
          for (int64_t c = 0; c < Cout; ++c) {
            dmk[c] += dh1[c] * hs[k * C2 + Cout + c];
            dh1[c] *= mk[c];
          }
        }
      }
    }
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> mgcn_bwd_cpu(
    const at::Tensor& grad_out_, const at::Tensor& x_, const at::Tensor& w_, const at::Tensor& m_, const at::Tensor& a_,
    const at::Tensor& pre_, const c10::optional<at::Tensor>& scale_shift, int64_t act) {
  const MgcnDims d = check_mgcn_args(x_, w_, m_, a_, scale_shift, act);
  const at::Tensor w = w_.detach(), m = m_.detach(), a = a_.detach();
  // The ATen calls below are internals of the kernel: detached inputs keep autograd out of them,
  // also on the worker threads of at::parallel_for (grad mode is thread-local).
  check_mgcn_bwd_args(d, grad_out_, pre_);
  const at::Tensor x = x_.detach().contiguous(), g = grad_out_.detach().to(x.scalar_type()).contiguous(),
                   pre = pre_.detach().to(x.scalar_type()).contiguous();
  const at::Tensor ss = scale_shift.has_value() ? scale_shift->detach().contiguous() : at::Tensor();
  at::Tensor dx, dw, dm, da, dbias, dss;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "mgcn_bwd_cpu", [&] {
    using T = at::opmath_type<scalar_t>;
    const at::ScalarType op = c10::CppTypeToScalarType<T>::value;
    const auto o = x.options().dtype(op);
    const Params<T> p = widen<T>(w, m, a, nullptr, op);
    const at::Tensor xw = x.view({d.B * d.J, d.Cin}).to(op);
    const int64_t spt = samples_per_tile(d.B, d.J);
    const int64_t tiles = (d.B + spt - 1) / spt;
    at::Tensor dH = at::empty({d.B * d.J, 2 * d.Cout}, o);
    at::Tensor pdm = at::empty({tiles, d.J, d.Cout}, o), pda = at::empty({tiles, d.J, d.J}, o),
               pdb = at::empty({tiles, d.Cout}, o);
    at::Tensor pdss = d.ss_rows == 1 ? at::empty({tiles, 2, d.Cout}, o) : at::Tensor();
    at::Tensor dssb = d.ss_rows > 1 ? at::empty({d.B, 2, d.Cout}, o) : at::Tensor();
    const BwdPartials<T> P{pdm.data_ptr<T>(), pda.data_ptr<T>(), pdb.data_ptr<T>(),
                           pdss.defined() ? pdss.data_ptr<T>() : nullptr,
                           dssb.defined() ? dssb.data_ptr<T>() : nullptr};
    if (d.B > 0)
      mgcn_bwd_cpu_impl<scalar_t>(xw, p, g.data_ptr<scalar_t>(), pre.data_ptr<scalar_t>(),
                                  d.ss_rows ? ss.data_ptr<scalar_t>() : nullptr, d.ss_rows, dH.data_ptr<T>(), P, spt,
                                  d.B, d.J, d.Cout, static_cast<int>(act));
    dx = at::mm(dH, p.wcat.t()).view({d.B, d.J, d.Cin}).to(x.scalar_type());
    const at::Tensor dwcat = at::mm(xw.t(), dH);  // [Cin, 2*Cout]
    dw = at::stack({dwcat.narrow(1, 0, d.Cout), dwcat.narrow(1, d.Cout, d.Cout)}).to(w.scalar_type());
    dm = pdm.sum(0).to(m.scalar_type());
    da = pda.sum(0).to(a.scalar_type());
    dbias = pdb.sum(0).to(w.scalar_type());
    if (d.ss_rows == 1) dss = pdss.sum(0, /*keepdim=*/true).to(ss.scalar_type());
    else if (d.ss_rows > 1) dss = dssb.to(ss.scalar_type());
    else if (ss.defined()) dss = at::zeros_like(ss);  // an empty batch's empty scale_shift
    else dss = at::empty({0}, x.options());
  });
  return {dx, dw, dm, da, dbias, dss};
}

}  // namespace

TORCH_LIBRARY_IMPL(diffupose, CPU, m) {
  m.impl("mgcn_fwd", &mgcn_fwd_cpu);
  m.impl("mgcn_bwd", &mgcn_bwd_cpu);
}

}  // namespace diffupose
