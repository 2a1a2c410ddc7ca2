// The epilogue rows of the CPU graph convolution compiled for AVX2 (see cpu/mgcn_rows.h).
// Only the row loops get this target: nothing from torch is included here.
#if defined(__x86_64__)
#pragma GCC target("avx2,fma")
#define DP_ROWS_NS avx2
#include "cpu/mgcn_rows_impl.h"

#include "cpu/mgcn_rows.h"

namespace diffupose {
MgcnRows mgcn_rows_avx2() {
  return {avx2::row_fwd_f32, avx2::row_fwd_f64, avx2::row_bwd_f32, avx2::row_bwd_f64,
          avx2::agg_fwd_f32, avx2::agg_fwd_f64, avx2::agg_bwd_f32, avx2::agg_bwd_f64, "avx2"};
}
}  // namespace diffupose
#endif  // __x86_64__
