// The inner loops of the CPU graph convolution compiled for AVX2 (see cpu/mgcn_rows.h).
// Only these loops get the target: nothing from torch is included in this file.
#if defined(__x86_64__)
#pragma GCC target("avx2,fma")
#define DP_ROWS_NS avx2
#define DP_ROWS_ISA "avx2"
#define DP_ROWS_FACTORY mgcn_rows_avx2
#define DP_ROWS_VW 8  // floats per vector register: a panel of the sampler's GEMM
#define DP_ROWS_MR 6  // rows per register block (2 x 6 accumulators; measured best on Zen 4)
#include "cpu/mgcn_rows_impl.h"
#endif
