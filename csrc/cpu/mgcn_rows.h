// Run-time choice of the instruction set for the CPU graph convolution's inner loops
// (cpu/mgcn_rows_impl.h): AVX-512, AVX2 + FMA, or the baseline, by what the CPU reports. The
// extension is built once for any x86-64 machine (no -march=native), so the wide versions are
// compiled beside the baseline and selected here, as ATen does for its own kernels.
#pragma once
#include <cstdint>

namespace diffupose {

struct MgcnRows {
  void (*fwd_f32)(float*, const float*, const float*, const float*, int64_t, int);
  void (*fwd_f64)(double*, const double*, const double*, const double*, int64_t, int);
  void (*bwd_f32)(float*, float*, const float*, const float*, const float*, int64_t, int);
  void (*bwd_f64)(double*, double*, const double*, const double*, const double*, int64_t, int);
  void (*agg_fwd_f32)(float*, float*, const float*, const float*, const float*, const float*, const float*, int64_t,
                      int64_t);
  void (*agg_fwd_f64)(double*, double*, const double*, const double*, const double*, const double*, const double*,
                      int64_t, int64_t);
  void (*agg_bwd_f32)(float*, float*, float*, float*, float*, const float*, const float*, const float*, const float*,
                      const float*, int64_t, int64_t);
  void (*agg_bwd_f64)(double*, double*, double*, double*, double*, const double*, const double*, const double*,
                      const double*, const double*, int64_t, int64_t);
  const char* isa;
};

MgcnRows mgcn_rows_avx512();  // cpu/mgcn_rows_avx512.cpp
MgcnRows mgcn_rows_avx2();    // cpu/mgcn_rows_avx2.cpp
const MgcnRows& mgcn_rows();  // the best for this CPU (mgcn_cpu.cpp)

// Typed access for the templated kernels.
template <typename T>
struct RowsOf;
template <>
struct RowsOf<float> {
  static void fwd(float* u, const float* p, const float* s1, const float* sh, int64_t C, int act) {
    mgcn_rows().fwd_f32(u, p, s1, sh, C, act);
  }
  static void bwd(float* g, float* u, const float* p, const float* s1, const float* sh, int64_t C, int act) {
    mgcn_rows().bwd_f32(g, u, p, s1, sh, C, act);
  }
  static void agg_fwd(float* pre, float* g1, const float* h0, const float* h1, const float* m, const float* a, const float* bias,
                      int64_t J, int64_t C) {
    mgcn_rows().agg_fwd_f32(pre, g1, h0, h1, m, a, bias, J, C);
  }
  static void agg_bwd(float* dh0, float* dh1, float* dm, float* da, float* g1, const float* dpre, const float* h0, const float* h1,
                      const float* m, const float* a, int64_t J, int64_t C) {
    mgcn_rows().agg_bwd_f32(dh0, dh1, dm, da, g1, dpre, h0, h1, m, a, J, C);
  }
};
template <>
struct RowsOf<double> {
  static void fwd(double* u, const double* p, const double* s1, const double* sh, int64_t C, int act) {
    mgcn_rows().fwd_f64(u, p, s1, sh, C, act);
  }
  static void bwd(double* g, double* u, const double* p, const double* s1, const double* sh, int64_t C, int act) {
    mgcn_rows().bwd_f64(g, u, p, s1, sh, C, act);
  }
  static void agg_fwd(double* pre, double* g1, const double* h0, const double* h1, const double* m, const double* a, const double* bias,
                      int64_t J, int64_t C) {
    mgcn_rows().agg_fwd_f64(pre, g1, h0, h1, m, a, bias, J, C);
  }
  static void agg_bwd(double* dh0, double* dh1, double* dm, double* da, double* g1, const double* dpre, const double* h0, const double* h1,
                      const double* m, const double* a, int64_t J, int64_t C) {
    mgcn_rows().agg_bwd_f64(dh0, dh1, dm, da, g1, dpre, h0, h1, m, a, J, C);
  }
};

}  // namespace diffupose
