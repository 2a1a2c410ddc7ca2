// Run-time choice of the instruction set for the CPU graph convolution's inner loops
// (cpu/mgcn_rows_impl.h): AVX-512, AVX2 + FMA, or the baseline, by what the CPU reports. The
// extension is built once for any x86-64 machine (no -march=native), so the wide versions are
// compiled beside the baseline and selected here, as ATen does for its own kernels.
#pragma once
#include <cstdint>

namespace diffupose {

// The loops of one accumulation type T (float or double); see cpu/mgcn_rows_impl.h.
template <typename T>
struct RowsOf {
  void (*fwd)(T* u, const T* pre, const T* scale1, const T* shift, int64_t C, int act);
  void (*bwd)(T* g, T* u, const T* pre, const T* scale1, const T* shift, int64_t C, int act);
  void (*agg_fwd)(T* pre, T* g1, const T* h0, const T* h1, const T* m, const T* a, const T* bias, int64_t J, int64_t C);
  void (*agg_bwd)(T* dh0, T* dh1, T* dm, T* da, T* g1, const T* dpre, const T* h0, const T* h1, const T* m,
                  const T* a, int64_t J, int64_t C);
};

struct MgcnRows {
  RowsOf<float> f32;
  RowsOf<double> f64;
  const char* isa;
};

MgcnRows mgcn_rows_base();    // mgcn_cpu.cpp (baseline instruction set)
MgcnRows mgcn_rows_avx512();  // cpu/mgcn_rows_avx512.cpp
MgcnRows mgcn_rows_avx2();    // cpu/mgcn_rows_avx2.cpp
const MgcnRows& mgcn_rows();  // the best for this CPU, or the one set for a test (mgcn_cpu.cpp)

template <typename T>
const RowsOf<T>& rows_of();
template <>
inline const RowsOf<float>& rows_of<float>() { return mgcn_rows().f32; }
template <>
inline const RowsOf<double>& rows_of<double>() { return mgcn_rows().f64; }

}  // namespace diffupose
