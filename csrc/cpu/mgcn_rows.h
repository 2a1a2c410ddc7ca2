// Run-time choice of the instruction set for the CPU graph convolution's inner loops
// (cpu/mgcn_rows_impl.h): AVX-512, AVX2 + FMA, or the baseline, by what the CPU reports. The
// extension is built once for any x86-64 machine (no -march=native), so the wide versions are
// compiled beside the baseline and selected here, as ATen does for its own kernels.
#pragma once
#include <cstdint>

namespace diffupose {

constexpr int kDaLanes = 16;  // lanes of agg_bwd's J x J dot products (one AVX-512 register of floats)

// The loops of one accumulation type T (float or double); see cpu/mgcn_rows_impl.h.
template <typename T>
struct RowsOf {
  void (*fwd)(T* u, const T* pre, const T* scale1, const T* shift, int64_t C, int act);
  void (*bwd)(T* g, T* u, const T* pre, const T* scale1, const T* shift, int64_t C, int act);
  // h0, h1, dh0, dh1: rows ldh apart (the halves of [H0 | H1] rows: ldh = 2 C)
  void (*agg_fwd)(T* pre, T* g1, const T* h0, const T* h1, int64_t ldh, const T* m, const T* a, const T* bias,
                  int64_t J, int64_t C);
  // da's dot products go per lane into da_lanes [J * J, kDaLanes]; agg_bwd_flush adds their sums to
  // da [J, J] and zeroes them (once per tile of samples: no horizontal sum per pair and sample)
  // pf [pf_len] (nullable): prefetched meanwhile (the next sample's H)
  void (*agg_bwd)(T* dh0, T* dh1, int64_t ldh, T* dm, T* da_lanes, T* g1, const T* dpre, const T* h0, const T* h1,
                  const T* m, const T* a, int64_t J, int64_t C, const T* pf, int64_t pf_len);
  void (*agg_bwd_flush)(T* da, T* da_lanes, int64_t J);
  // the training batch norm (csrc/norm_act_cpu.cpp): acc += row, or (row - centre)^2 with a centre
  void (*norm_sum)(T* acc, const T* row, const T* centre, int64_t C);
  // its statistics in one pass, in double whatever T (mgcn_norm_fwd: sum += row, sq += row^2 while
  // the convolution's row is in cache; double keeps sq / n - mean^2 exact to ~1e-12 of sq / n)
  void (*norm_stats)(double* sum, double* sq, const T* row, int64_t C);
  // dz (after act') -> dy = dz * s1 in place, accumulating dsc [2, C] += (dz * y, dz) (dsc, s1
  // nullable: no scale-shift), db += dy, dg += dy * xhat; y = pre * k + c0, xhat = (pre - mu) * rstd
  void (*norm_bwd)(T* dz, const T* pre, const T* k, const T* c0, const T* s1, T* dsc, T* db, T* dg, const T* mu,
                   const T* rstd, int64_t C);
  // dpre = rstd * gamma * (dy - dbn - xhat * dgn), dbn, dgn = dbeta / n, dgamma / n (dpre == dy: in place)
  void (*norm_dpre)(T* dpre, const T* dy, const T* pre, const T* mu, const T* rstd, const T* gamma, const T* dbn,
                    const T* dgn, int64_t C);
};

// One modulated graph convolution, forward, float32, over whole samples of J rows each: the whole
// sampler's layer (csrc/sample_cpu.cpp). GEMM, aggregation and epilogue run per panel of the
// output channels (kConvPanelMax or fewer, the instruction set's vector width), so a panel's H0, H1
// stay in L1 between the GEMM and the aggregation; threads may split the panels.
//   out[:, c] = act((diag(a) m H0 + offdiag(a) m H1 + bias)[:, c] * scale1[c] + shift[c]) (+= out)
struct ConvPanels {
  const float* x;          // [rows, cin] row-major; rows = samples * J
  int64_t rows, cin;
  const float* w;          // [cin, 2 C] = [w0 | w1]
  const float *m, *a, *bias;  // [J, C], [J, J], [C]
  int64_t J, C;
  const float *scale1, *shift;  // [C] each, or nullptr (no scale-shift)
  int act;
  bool residual;           // add to out instead of writing it
  float* out;              // [rows, C]
  float* scratch;          // conv_panels_scratch(rows, J) floats, the caller's thread's own
};
constexpr int64_t kConvPanelMax = 16;
inline int64_t conv_panels_scratch(int64_t rows, int64_t J) { return (2 * rows + 2 * J) * kConvPanelMax; }

struct MgcnRows {
  RowsOf<float> f32;
  RowsOf<double> f64;
  // panels [p0, p1) of a ConvPanels, each `panel` channels wide (the last one may be narrower)
  void (*conv_panels_fwd)(const ConvPanels& p, int64_t p0, int64_t p1);
  int64_t panel;
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
