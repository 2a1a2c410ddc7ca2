// The epilogue rows of the CPU graph convolution compiled for AVX512 (see cpu/mgcn_rows.h).
// Only the row loops get this target: nothing from torch is included here.
#if defined(__x86_64__)
#pragma GCC target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")
#define DP_ROWS_NS avx512
#include "cpu/mgcn_rows_impl.h"

#include "cpu/mgcn_rows.h"

namespace diffupose {
MgcnRows mgcn_rows_avx512() {
  return {avx512::row_fwd_f32, avx512::row_fwd_f64, avx512::row_bwd_f32, avx512::row_bwd_f64,
          avx512::agg_fwd_f32, avx512::agg_fwd_f64, avx512::agg_bwd_f32, avx512::agg_bwd_f64, "avx512"};
}
}  // namespace diffupose
#endif  // __x86_64__
