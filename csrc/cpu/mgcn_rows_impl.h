// The epilogue's row loops of the CPU graph convolution (csrc/mgcn_cpu.cpp), compiled once per
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

#ifndef DP_ROWS_NS
#error "define DP_ROWS_NS before including cpu/mgcn_rows_impl.h"
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

// Non-template entry points, one per type, for the dispatch table of cpu/mgcn_rows.h.
inline void row_fwd_f32(float* u, const float* pre, const float* s1, const float* sh, int64_t C, int act) {
  epilogue_row_fwd<float>(u, pre, s1, sh, C, act);
}
inline void row_fwd_f64(double* u, const double* pre, const double* s1, const double* sh, int64_t C, int act) {
  epilogue_row_fwd<double>(u, pre, s1, sh, C, act);
}
inline void row_bwd_f32(float* g, float* u, const float* pre, const float* s1, const float* sh, int64_t C, int act) {
  epilogue_row_bwd<float>(g, u, pre, s1, sh, C, act);
}
inline void row_bwd_f64(double* g, double* u, const double* pre, const double* s1, const double* sh, int64_t C,
                        int act) {
  epilogue_row_bwd<double>(g, u, pre, s1, sh, C, act);
}

}  // namespace DP_ROWS_NS
}  // namespace diffupose
