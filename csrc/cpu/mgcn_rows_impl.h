// The inner loops (per-sample aggregation, epilogue rows) of the CPU graph convolution (csrc/mgcn_cpu.cpp), compiled once per
// instruction set: this header is included by mgcn_cpu.cpp (baseline x86-64 / any CPU) and by
// cpu/mgcn_rows_avx2.cpp and cpu/mgcn_rows_avx512.cpp under `#pragma GCC target`, each time in
// its own namespace DP_ROWS_NS; mgcn_cpu.cpp picks one at run time (cpu/mgcn_rows.h).
// Only plain loops on float/double here, and no std containers or torch headers: an inline
// function of a shared header compiled with AVX-512 could otherwise be the copy the linker keeps
// for every caller (and crash on a CPU without it).
// (no include guard: included once per instruction set)
#include <cmath>
#include <cstdint>
#include <cstring>

#include "common/activation.h"
#include "cpu/mgcn_rows.h"

#ifndef DP_ROWS_NS
#error "define DP_ROWS_NS, DP_ROWS_ISA and DP_ROWS_FACTORY before including cpu/mgcn_rows_impl.h"
#endif

namespace diffupose {
namespace DP_ROWS_NS {

// exp for the row loops: a Cephes-style polynomial (max relative error 8e-8 in float, like
// libm's) that gcc vectorizes (no libm call in the loop; -fno-trapping-math in setup.py lets the
// clamps if-convert); the scalar expf of StdExp made silu the most expensive part of the
// epilogue. fp64 keeps std::exp.
struct RowExp {
  float operator()(float v) const {
    v = v < -87.0f ? -87.0f : v;  // conditional moves, not std::min/max: keeps the loop branch-free
    v = v > 88.0f ? 88.0f : v;
    // n = round(v / ln2) by the 1.5 * 2^23 trick (exact for |v / ln2| < 2^22): pure float ops
    const float kRound = 12582912.0f;
    const float nf = (v * 1.44269504088896341f + kRound) - kRound;
    const float r = (v - nf * 0.693359375f) + nf * 2.12194440e-4f;  // v - n ln2, ln2 in two parts
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    const float y = p * r * r + r + 1.0f;
    const int32_t bits = (static_cast<int32_t>(nf) + 127) << 23;  // 2^n
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

// The J x J aggregation of one sample, forward: pre [J, C] = diag(a) m H0 + offdiag(a) (m H1) + bias;
// g1 [J, C] scratch (m * H1). h0, h1 [J, C]; m [J, C]; a [J, J]; bias [C].
template <typename T>
void aggregate_fwd(T* pre, T* g1, const T* h0, const T* h1, const T* m, const T* a, const T* bias, int64_t J,
                   int64_t C) {
  for (int64_t i = 0; i < J * C; ++i) g1[i] = m[i] * h1[i];
  for (int64_t j = 0; j < J; ++j) {
    T* row = pre + j * C;
    const T ajj = a[j * J + j];
    const T* mj = m + j * C;
    const T* h0j = h0 + j * C;
    for (int64_t c = 0; c < C; ++c) row[c] = bias[c] + ajj * mj[c] * h0j[c];
    for (int64_t k = 0; k < J; ++k) {
      if (k == j) continue;  // the own joint goes through w0, not w1
      const T ajk = a[j * J + k];
      const T* gk = g1 + k * C;
      for (int64_t c = 0; c < C; ++c) row[c] += ajk * gk[c];
    }
  }
}

// Backward of the aggregation of one sample from dpre [J, C]: writes dh0, dh1 [J, C] (the
// gradients of H0 = x w0, H1 = x w1) and accumulates dm [J, C], da [J, J]; g1 [J, C] scratch.
//   self:       dG0_j = a_jj dpre_j;  dH0_j = m_j dG0_j;  dm_j += dG0_j H0_j;  da_jj += <dpre_j, m_j H0_j>
//   neighbours: dG1_k = sum_{j != k} a_jk dpre_j;  dH1_k = m_k dG1_k;  dm_k += dG1_k H1_k;
//               da_jk += <dpre_j, m_k H1_k>
template <typename T>
void aggregate_bwd(T* dh0, T* dh1, T* dm, T* da, T* g1, const T* dpre, const T* h0, const T* h1, const T* m,
                   const T* a, int64_t J, int64_t C) {
  for (int64_t i = 0; i < J * C; ++i) g1[i] = m[i] * h1[i];
  for (int64_t j = 0; j < J; ++j) {
    const T* dpj = dpre + j * C;
    const T* mj = m + j * C;
    const T* h0j = h0 + j * C;
    T* dmj = dm + j * C;
    T* dh0j = dh0 + j * C;
    const T ajj = a[j * J + j];
    T dajj = 0;
#pragma omp simd reduction(+ : dajj)  // lets the dot product vectorize (reassociation)
    for (int64_t c = 0; c < C; ++c) {
      const T dg0 = ajj * dpj[c];
      dh0j[c] = mj[c] * dg0;
      dmj[c] += dg0 * h0j[c];
      dajj += dpj[c] * mj[c] * h0j[c];
    }
    da[j * J + j] += dajj;
  }
  for (int64_t i = 0; i < J * C; ++i) dh1[i] = T(0);  // dG1 accumulates here first
  for (int64_t j = 0; j < J; ++j) {
    const T* dpj = dpre + j * C;
    for (int64_t k = 0; k < J; ++k) {
      if (k == j) continue;
      const T ajk = a[j * J + k];
      T* dg1k = dh1 + k * C;
      const T* gk = g1 + k * C;
      T dajk = 0;
#pragma omp simd reduction(+ : dajk)
      for (int64_t c = 0; c < C; ++c) {
        dg1k[c] += ajk * dpj[c];
        dajk += dpj[c] * gk[c];
      }
      da[j * J + k] += dajk;
    }
  }
  for (int64_t i = 0; i < J * C; ++i) {
    dm[i] += dh1[i] * h1[i];
    dh1[i] *= m[i];
  }
}

template <typename T>
RowsOf<T> rows_table() {
  return {epilogue_row_fwd<T>, epilogue_row_bwd<T>, aggregate_fwd<T>, aggregate_bwd<T>};
}

}  // namespace DP_ROWS_NS

// The dispatch table of this instruction set (mgcn_rows_base(), mgcn_rows_avx2(), ...).
MgcnRows DP_ROWS_FACTORY() {
  return {DP_ROWS_NS::rows_table<float>(), DP_ROWS_NS::rows_table<double>(), DP_ROWS_ISA};
}
}  // namespace diffupose
